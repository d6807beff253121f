"""Least-squares linear regression y = slope * x + intercept (as Phoenix ``linear_regression``).

Input: lines ``x y`` of two numbers (int or float) separated by white space; blank lines
and lines starting with ``#`` are skipped. Each map emits the partial sums
[n, sum x, sum y, sum x*x, sum x*y] under one key; the combiner and the single reducer
add them up element-wise, and the reducer solves the normal equations:

    slope     = (n*Sxy - Sx*Sy)   / (n*Sxx - Sx*Sx)
    intercept = (Sy*Sxx - Sx*Sxy) / (n*Sxx - Sx*Sx)

Output (one part, keys in sorted order): ``intercept``, ``n``, ``slope``, ``sum_x``,
``sum_xx``, ``sum_xy``, ``sum_y``. With integer input the sums are exact and the slope and
intercept are the correctly rounded quotients, whatever the order of the additions.

Run it::

    blfs submit examples/linear_regression.py --input points.txt --output out --local
"""
from blfsd import Job


def number(text):
    try:
        return int(text)
    except ValueError:
        return float(text)


def add(sums, more):
    return [a + b for a, b in zip(sums, more)]


class LinearRegression(Job):
    reducers = 1

    def map(self, key, value):
        fields = value.split()
        if not fields or fields[0].startswith("#"):
            return
        x, y = number(fields[0]), number(fields[1])
        yield "sums", [1, x, y, x * x, x * y]

    def combine(self, key, values):
        total = [0, 0, 0, 0, 0]
        for sums in values:
            total = add(total, sums)
        yield key, total

    def reduce(self, key, values):
        n = sx = sy = sxx = sxy = 0
        for sums in values:
            n, sx, sy, sxx, sxy = add([n, sx, sy, sxx, sxy], sums)
        det = n * sxx - sx * sx
        if det == 0:
            raise ValueError("all x values are equal: the slope is undefined")
        # Emitted in sorted key order: a reducer's output is written as it comes.
        yield "intercept", (sy * sxx - sx * sxy) / det
        yield "n", n
        yield "slope", (n * sxy - sx * sy) / det
        yield "sum_x", sx
        yield "sum_xx", sxx
        yield "sum_xy", sxy
        yield "sum_y", sy
