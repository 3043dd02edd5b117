/* commands.h - the subcommands of the sluice command, one file each (tools/cmd_*.c).
 * Each takes argv starting at its own name and returns the process exit status:
 * 0 success, 1 an error in the user's input, 2 bad usage. */
#ifndef SLUICE_COMMANDS_H
#define SLUICE_COMMANDS_H

enum { EXIT_OK = 0, EXIT_INPUT = 1, EXIT_USAGE = 2 };

int cmd_check(int argc, char **argv);
int cmd_ir(int argc, char **argv);
int cmd_dot(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_data(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
