"""The medians of alternating benchmark rounds, for benches/http.sh and benches/http_redis.sh.

    python3 benches/rounds.py OURS PEER

Each file has one line per round: "requests/s p50 p99 [extra ...]", the latencies in wrk's units
(us, ms, s). Prints one line of '|'-separated fields: for each file, the median requests/s
(with thousands separators), p50 and p99 (in µs or ms) and each extra column (3 decimals); then
the median of the rounds' ratios of OURS's requests/s to PEER's, its quartiles and every ratio
(3 decimals). Medians over rounds, not means: one slow round on a shared machine moves a mean.
"""
import re
import statistics
import sys


def seconds(t):
    v, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", t).groups()
    return float(v) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def show(s):
    return f"{s * 1e6:.0f} µs" if s < 1e-3 else f"{s * 1e3:.2f} ms"


runs = [[line.split() for line in open(path) if line.strip()] for path in sys.argv[1:3]]
out = []
for rows in runs:
    out.append(f"{statistics.median(float(r[0]) for r in rows):,.0f}")
    out += [show(statistics.median(seconds(r[i]) for r in rows)) for i in (1, 2)]
    out += [f"{statistics.median(float(r[i]) for r in rows):.3f}" for i in range(3, len(rows[0]))]
ratios = [float(a[0]) / float(b[0]) for a, b in zip(*runs)]
q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
out += [f"{statistics.median(ratios):.3f}", f"{q1:.3f}", f"{q3:.3f}", " ".join(f"{r:.3f}" for r in ratios)]
print("|".join(out))
