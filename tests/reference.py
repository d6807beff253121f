"""Single-process reference computations for the examples, and output checking.

Each reference function reads the input files with plain Python and returns the
expected result as a dict {key: value}; ``expected_lines`` turns it into the exact
text lines a correct blfs run writes, and ``check_output`` compares an output
directory against it.
"""
from __future__ import annotations

import json
import os
import re
from collections import Counter


# ---------------------------------------------------------------- input reading

def read_lines(path):
    """The lines of a text file as the "lines" input format sees them: split on
    '\\n' only, newline removed, no empty line after a final newline."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def all_lines(paths):
    for path in paths:
        yield from read_lines(path)


# ---------------------------------------------------------------- references

def wordcount(paths):
    return dict(Counter(w for line in all_lines(paths) for w in line.split()))


def grep(paths, pattern):
    rx = re.compile(pattern)
    return dict(Counter(line for line in all_lines(paths) if rx.search(line)))


def inverted_index(paths):
    index = {}
    for path in paths:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8").lower()
        for word in re.findall(r"[^\W\d_]+", text):
            index.setdefault(word, set()).add(os.path.basename(path))
    return {word: sorted(docs) for word, docs in index.items()}


def histogram(paths):
    counts = Counter()
    for path in paths:
        with open(path, "rb") as f:
            counts.update(f.read())
    return dict(counts)


def linear_regression(paths):
    xs, ys = [], []
    for line in all_lines(paths):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        xs.append(int(fields[0]))
        ys.append(int(fields[1]))
    n = len(xs)
    sx, sy = sum(xs), sum(ys)
    sxx = sum(x * x for x in xs)
    sxy = sum(x * y for x, y in zip(xs, ys))
    det = n * sxx - sx * sx
    # int / int is correctly rounded in Python, so this matches any exact computation.
    return {
        "n": n,
        "slope": (n * sxy - sx * sy) / det,
        "intercept": (sy * sxx - sx * sxy) / det,
        "sum_x": sx,
        "sum_y": sy,
        "sum_xx": sxx,
        "sum_xy": sxy,
    }


def string_match(paths, keys):
    keys = set(keys)
    return dict(Counter(w for line in all_lines(paths) for w in line.split() if w in keys))


# ---------------------------------------------------------------- output format

def format_field(x):
    """How blfs prints a key or value: str() for str/int/float, JSON for the rest."""
    if isinstance(x, bool) or x is None or isinstance(x, (list, tuple, dict)):
        return json.dumps(x)
    if isinstance(x, (str, int, float)):
        return str(x)
    raise TypeError(f"no output format for {type(x).__name__}")


def expected_lines(result):
    """The sorted list of output lines ``key<TAB>value`` for a reference dict."""
    return sorted(f"{format_field(k)}\t{format_field(v)}" for k, v in result.items())


def read_parts(outdir):
    """{part file name: [lines]} for every part-NNNNN file of an output directory."""
    parts = {}
    for name in sorted(os.listdir(outdir)):
        if re.fullmatch(r"part-\d{5}", name):
            with open(os.path.join(outdir, name), "rb") as f:
                text = f.read().decode("utf-8")
            assert text == "" or text.endswith("\n"), f"{name}: last line not terminated"
            parts[name] = text.split("\n")[:-1] if text else []
    return parts


def read_output(outdir, key_type=str, value_type=None):
    """Parse an output directory back into {key: value}.

    key_type converts the key text (str or int). Values are JSON-decoded when they
    look like JSON lists/maps, int when int-like, float when float-like, else str.
    """
    result = {}
    for lines in read_parts(outdir).values():
        for line in lines:
            k, _, v = line.partition("\t")
            result[key_type(k)] = value_type(v) if value_type else _guess(v)
    return result


def _guess(text):
    if text[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    return text


def check_output(outdir, result, *, key_type=str, parts=None):
    """Assert that outdir is a complete, correct blfs output for the reference dict.

    - ``_SUCCESS`` exists, and nothing but part files and "_"-prefixed metadata is
      left behind (no temporary or partial files);
    - there are exactly ``parts`` part files, named part-00000 ... (when given);
    - every line is ``key<TAB>value``, keys are strictly increasing within each part
      (compared after ``key_type`` conversion, so int keys sort numerically);
    - no key appears in two parts;
    - the multiset of lines equals the one the reference result prints.
    """
    names = sorted(os.listdir(outdir))
    assert "_SUCCESS" in names, f"no _SUCCESS in {outdir}: {names}"
    found = read_parts(outdir)
    # "_"-prefixed names are metadata by convention (as Hadoop's _SUCCESS, _logs);
    # anything else that is not a part is a leftover temporary or partial file.
    others = [n for n in names if not n.startswith("_") and n not in found]
    assert not others, f"unexpected files in the output directory: {others}"
    if parts is not None:
        assert sorted(found) == [f"part-{i:05d}" for i in range(parts)], sorted(found)
    seen = {}
    for name, lines in found.items():
        previous = None
        for line in lines:
            assert "\t" in line, f"{name}: no tab in line {line!r}"
            key = key_type(line.split("\t", 1)[0])
            assert previous is None or previous < key, \
                f"{name}: keys not sorted: {previous!r} then {key!r}"
            previous = key
            assert key not in seen, f"key {key!r} in both {seen.get(key)} and {name}"
            seen[key] = name
    got = sorted(line for lines in found.values() for line in lines)
    want = expected_lines(result)
    if got != want:
        missing = sorted(set(want) - set(got))[:10]
        extra = sorted(set(got) - set(want))[:10]
        raise AssertionError(
            f"output differs from the reference: {len(got)} lines, expected {len(want)}; "
            f"first missing: {missing}; first unexpected: {extra}")
