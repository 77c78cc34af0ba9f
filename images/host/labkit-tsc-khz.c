/* labkit-tsc-khz: this host's TSC frequency in kHz, measured against CLOCK_MONOTONIC_RAW.
 *
 * Under QEMU's software emulation a guest's TSC is the host's. A guest calibrates it against the
 * emulated PIT, which fails when the host is busy (many guests booting at once); the kernel then
 * marks the TSC unstable, falls back to jiffies and ticks 1000 times a second forever, idle or not.
 * labkit measures the frequency once per host boot and gives it to the guests (tsc_early_khz).
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_RAW, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    double best = 0;
    for (int round = 0; round < 5; round++) { /* the least disturbed of five 20 ms windows */
        double t0 = now();
        uint64_t c0 = __rdtsc();
        struct timespec wait = {0, 20000000};
        nanosleep(&wait, NULL);
        uint64_t c1 = __rdtsc();
        double t1 = now();
        double khz = (c1 - c0) / (t1 - t0) / 1000.0;
        if (khz > best) best = khz; /* a preemption between a clock read and a TSC read only lowers it */
    }
    printf("%.0f\n", best);
    return 0;
}
