/* commands.h — the subcommands of the `kvscope` program. Each lives in its own cmd_<name>.c, takes the
 * argv that starts at the subcommand name, and returns a status; main() prints the error line and exits. */
#ifndef KS_COMMANDS_H
#define KS_COMMANDS_H

#include "core/status.h"

typedef struct ks_command {
    const char *name;
    const char *summary;
    ks_status (*run)(int argc, char **argv);
} ks_command;

ks_status ks_cmd_generate(int argc, char **argv);
ks_status ks_cmd_tokenize(int argc, char **argv);
ks_status ks_cmd_info(int argc, char **argv);
ks_status ks_cmd_eval(int argc, char **argv);
ks_status ks_cmd_prepare(int argc, char **argv);
ks_status ks_cmd_report(int argc, char **argv);
ks_status ks_cmd_bench(int argc, char **argv);

#endif
