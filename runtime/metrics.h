/* metrics.h - per-step metrics as JSON lines: one object per line, flushed as written,
 * so a run can be followed (tail -f) and plotted while it trains.  A row is built key
 * by key: rt_metrics_begin, rt_metrics_num / rt_metrics_sub_num, rt_metrics_end. */
#ifndef SLUICE_RT_METRICS_H
#define SLUICE_RT_METRICS_H

#include <stdio.h>

struct rt_metrics;

/* Open path for writing (append = 1: add to an existing file, as a resumed run does).
 * NULL with a message on err. */
struct rt_metrics *rt_metrics_open(const char *path, int append, FILE *err);
void rt_metrics_close(struct rt_metrics *m);
void rt_metrics_begin(struct rt_metrics *m);
/* key: number (NaN and infinities are written as null) */
void rt_metrics_num(struct rt_metrics *m, const char *key, double v);
/* obj: { key: number }, the object made on first use (e.g. expert load per layer) */
void rt_metrics_sub_num(struct rt_metrics *m, const char *obj, const char *key, double v);
/* Write the row as one line and flush; 0, or -1 when the write failed. */
int rt_metrics_end(struct rt_metrics *m);

#endif
