"""Four steps: word count; a reduce-only step that re-keys by word length; a map and
reduce that totals the words of each length; a map-only last step that writes each
length's share of all words. Values of the last reduce arrive sorted (sort_values)."""
from blfsd import Job, Step


class Lengths(Job):
    def steps(self):
        return [Step(map=self.words, combine=self.total, reduce=self.total, reducers=2),
                Step(reduce=self.by_length, reducers=3),
                Step(map=self.to_all, reduce=self.shares, reducers=1, sort_values=True),
                Step(map=self.line)]

    def words(self, key, line):
        for word in line.split():
            yield word, 1

    def total(self, key, counts):
        yield key, sum(counts)

    def by_length(self, word, counts):
        yield len(word), sum(counts)

    def to_all(self, length, count):
        yield "all", (length, count)

    def shares(self, _, pairs):
        pairs = list(pairs)
        assert pairs == sorted(pairs), "sort_values: values arrive sorted"
        by_length: dict = {}
        for length, count in pairs:
            by_length[length] = by_length.get(length, 0) + count
        total = sum(by_length.values())
        for length, count in sorted(by_length.items()):
            yield length, [count, total]

    def line(self, length, counts):
        count, total = counts
        yield length, f"{count}/{total}"
