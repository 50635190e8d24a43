/* placeholder while the generate command is being written (replaced before landing) */
#include "cli/commands.h"
ks_status ks_cmd_generate(int argc, char **argv) { (void)argc; (void)argv; return ks_fail(KS_ERR_UNSUPPORTED, "generate: not built yet"); }
