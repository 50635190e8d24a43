/* cpu_env.h — the start-up settings of the CPU libraries kvscope computes with. libgomp (OpenMP) and OpenBLAS
 * read them from the environment once, in their library constructors, which run before main: no call made
 * later can change them. So the program's first act sets the ones the user left unset and runs itself again.
 *
 *     int main(int argc, char **argv) { ks_cpu_env_settle(argv); ... }
 *
 *   GOMP_SPINCOUNT=KS_CPU_SPIN_COUNT  an idle OpenMP thread spins this many iterations (a few microseconds)
 *                     and then sleeps in the kernel until work comes. libgomp's default spins 300,000 iterations
 *                     per wait: on a machine whose cores other processes share, the spinning threads use up their
 *                     share of the cores, and a run of short parallel loops waits again and again for a thread the
 *                     scheduler put aside (SmolLM2 decode with its 120 products per token as OpenMP loops, 2
 *                     threads, a loaded 2-core machine: 4.5 tokens/s with 20,000 spins, 16-25 with 3,000, 19-59
 *                     with 100 or a passive wait; kernels/cpu/team.h's helpers run those products instead). Not
 *                     set when OMP_WAIT_POLICY or GOMP_SPINCOUNT is.
 *   OPENBLAS_CORETYPE  Haswell or SkylakeX where OpenBLAS did not recognise the CPU and fell back to its pre-AVX2
 *                     kernels though the CPU has AVX2 / AVX-512 (ks_fast_blas_coretype_hint). Not set when set.
 */
#ifndef KS_CLI_CPU_ENV_H
#define KS_CLI_CPU_ENV_H

#define KS_CPU_SPIN_COUNT "100"

/* Sets what is missing above and, when it set anything, replaces the process by a new run of the same program
 * with the same arguments (execv of /proc/self/exe: same pid, so mpirun and job schedulers see one process);
 * returns when nothing was missing, or (with a warning) when the exec failed. */
void ks_cpu_env_settle(char **argv);

#endif
