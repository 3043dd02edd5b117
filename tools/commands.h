/* commands.h - the subcommands of the sluice command, one file each (tools/cmd_*.c).
 * Each takes argv starting at its own name and returns the process exit status:
 * 0 success, 1 an error in the user's input, 2 bad usage. */
#ifndef SLUICE_COMMANDS_H
#define SLUICE_COMMANDS_H

#include <stdio.h>

#include "args.h"

enum { EXIT_OK = 0, EXIT_INPUT = 1, EXIT_USAGE = 2 };

int cmd_check(int argc, char **argv);
int cmd_ir(int argc, char **argv);
int cmd_dot(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_schedule(int argc, char **argv);

/* The graph of FILE as read, no pass run: a model (.sl) compiled, or textual IR parsed
 * (its --set overrides and train settings checked).  NULL with *status set on failure. */
struct ir_graph *cmd_ir_read(const char *cmd, const char *path,
			     const struct args_overrides *over, int *status);
/* Shared by the commands that read a model (tools/cmd_ir.c): load FILE, a model (.sl)
 * or textual IR, and run the pass pipeline up to `after` (NULL: all).  On failure
 * returns NULL with *status set to the exit status and the message printed. */
struct ir_graph *cmd_ir_load(const char *cmd, const char *path, const char *after,
			     const struct args_overrides *over, int *status);
/* The options every such command takes: --set NAME=VALUE, --after PASS, -o FILE.
 * Returns 1 when argv[*i] was one (and moves *i past it), 0 when it was not, -1 after
 * printing a usage error. */
int cmd_ir_take_option(int argc, char **argv, int *i, const char *cmd,
		       struct args_overrides *over, const char **after, const char **outp);
struct rt_program;
/* Every rank's compiled program (no code: for printing and pictures) for the layout
 * of g's settings on `ranks` ranks (0: pp x ep), checked together; g after the
 * passes.  Past CMD_VERIFY_RANKS ranks and with only >= 0, rank `only`'s program
 * alone (the others NULL).  An exit status; on success *out holds n_out programs
 * (free each, then the array).  cycle (NULL: none) gets the drawing of the ranks that
 * wait on each other when the check finds the job cannot finish. */
#define CMD_VERIFY_RANKS 64
int cmd_programs(const char *file, struct ir_graph *g, int ranks, int only,
		 struct rt_program ***out, int *n_out, FILE *cycle);
/* 0 when `after` names a pass (or is NULL); else prints the names, returns EXIT_USAGE. */
int cmd_ir_check_pass(const char *cmd, const char *after);
/* Write PATH through write() to a temporary file, fsync, rename; returns an exit status. */
int cmd_ir_write_atomic(const char *cmd, const char *path,
			int (*write)(FILE *f, const void *ctx), const void *ctx);
/* Write DOT text to OUT (tools/cmd_dot.c): .dot or .gv as text, .svg, .png or .pdf
 * rendered through Graphviz (built without it: OUT.dot, and how to render it). */
int cmd_draw(const char *cmd, const char *dot, const char *outp);
/* 1 when OUT's extension is one cmd_draw writes */
int cmd_draw_ext_ok(const char *outp);

#endif
