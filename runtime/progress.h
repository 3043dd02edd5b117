/* progress.h - what a training run shows while it runs.  On a terminal, one line
 * redrawn in place: a bar, step/total, loss, tokens/s and the time left.  Elsewhere
 * (a log file, a pipe, CI) plain lines at a modest rate, so logs stay readable. */
#ifndef SLUICE_RT_PROGRESS_H
#define SLUICE_RT_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

struct rt_progress {
	FILE *f;
	int tty;           /* redraw one line in place */
	int64_t total;     /* steps of the whole run */
	int64_t every;     /* plain mode: print every this many steps */
	int drawn;         /* a bar is on screen (tty) */
};

/* tty < 0: decide with isatty(fileno(f)). */
void rt_progress_init(struct rt_progress *p, FILE *f, int64_t total, int tty);
/* After step `done` (1-based count of steps finished).  lm: a second loss shown beside
 * the objective (the language-model part of it), NaN for none. */
void rt_progress_step(struct rt_progress *p, int64_t done, double loss, double lm,
		      double tok_per_s, double eta_s);
/* A line of its own (validation loss, checkpoint saved, ...), printed above the bar. */
void rt_progress_note(struct rt_progress *p, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* End the bar's line. */
void rt_progress_done(struct rt_progress *p);

/* "1h02m", "3m12s", "45s" into buf */
char *rt_format_duration(double s, char *buf, size_t n);

#endif
