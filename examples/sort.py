"""Sort: lines ``KEY<TAB>PAYLOAD`` ordered by key, as a shuffle benchmark (tools/bench.py).

The map passes every record through (the key is what comes before the first TAB, the
value what follows it), a range partitioner sends keys to reducers by their first letter
(a..z spread evenly over the reducers, in order), and there is no combiner. Each output
line is ``key<TAB>value``, which is the input line again, so the parts read in order
(``cat out/part-*``) are the whole input sorted by key.

Records with equal keys come out in the order the reducer is given them; MapReduce does
not promise one (tools/bench.py checks such files up to that order).

Run it (tools/gen_records.py makes suitable input)::

    blfs submit examples/sort.py --input records.txt --output sorted --local --workers 2
    cat sorted/part-* | cmp - <(LC_ALL=C sort records.txt)
"""
from blfsd import Job


class Sort(Job):
    reducers = 2

    def map(self, key, value):
        # key: byte offset of the line; value: the line without its newline
        k, _, payload = value.partition("\t")
        yield k, payload

    def partition(self, key, n):
        # by the first letter: a..m to the first half of the reducers, n..z to the second
        # (for n = 2); anything else (digits, capitals, empty keys) to the nearest end
        first = ord(key[0]) - 97 if key else 0
        return min(n - 1, max(0, first) * n // 26)

    def reduce(self, key, values):
        for value in values:
            yield key, value
