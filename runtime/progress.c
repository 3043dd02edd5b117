/* progress.c - progress bar and plain progress lines (see progress.h). */
#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <unistd.h>

void rt_progress_init(struct rt_progress *p, FILE *f, int64_t total, int tty)
{
	p->f = f;
	p->tty = tty < 0 ? isatty(fileno(f)) : tty;
	p->total = total;
	p->every = total >= 200 ? total / 50 : total >= 20 ? 10 : 1;
	p->drawn = 0;
}

char *rt_format_duration(double s, char *buf, size_t n)
{
	if (!(s >= 0) || s > 1e8) {
		snprintf(buf, n, "?");
		return buf;
	}
	long t = lround(s);
	if (t >= 3600)
		snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
	else if (t >= 60)
		snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
	else
		snprintf(buf, n, "%lds", t);
	return buf;
}

static void rate_str(double r, char *buf, size_t n)
{
	if (r >= 1e6)
		snprintf(buf, n, "%.2fM", r / 1e6);
	else if (r >= 1e4)
		snprintf(buf, n, "%.1fk", r / 1e3);
	else
		snprintf(buf, n, "%.0f", r);
}

void rt_progress_step(struct rt_progress *p, int64_t done, double loss, double lm,
		      double tok_per_s, double eta_s)
{
	char eta[32], rate[32], lms[32] = "";
	rt_format_duration(eta_s, eta, sizeof eta);
	rate_str(tok_per_s, rate, sizeof rate);
	if (!isnan(lm))
		snprintf(lms, sizeof lms, " (lm %.4f)", lm);
	if (p->tty) {
		enum { W = 24 };
		char bar[W + 1];
		int fill = p->total > 0 ? (int)(W * done / p->total) : W;
		for (int i = 0; i < W; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[W] = 0;
		fprintf(p->f, "\r\033[K[%s] step %lld/%lld  loss %.4f%s  %s tok/s  ETA %s", bar,
			(long long)done, (long long)p->total, loss, lms, rate, eta);
		fflush(p->f);
		p->drawn = 1;
		return;
	}
	if (done == 1 || done % p->every == 0 || done == p->total)
		fprintf(p->f, "step %lld/%lld  loss %.4f%s  %s tok/s  ETA %s\n", (long long)done,
			(long long)p->total, loss, lms, rate, eta);
}

void rt_progress_note(struct rt_progress *p, const char *fmt, ...)
{
	if (p->tty && p->drawn)
		fprintf(p->f, "\r\033[K");
	va_list ap;
	va_start(ap, fmt);
	vfprintf(p->f, fmt, ap);
	va_end(ap);
	fputc('\n', p->f);
	fflush(p->f);
	p->drawn = 0;
}

void rt_progress_done(struct rt_progress *p)
{
	if (p->tty && p->drawn)
		fputc('\n', p->f);
	fflush(p->f);
	p->drawn = 0;
}
