"""Word count, then the 100 most frequent words: the pipeline of `make bench`."""
import heapq

from blfsd import Job, Step


class Top100(Job):
    def steps(self):
        return [Step(map=self.words, combine=self.count, reduce=self.count),
                Step(map=self.to_one_key, reduce=self.top, reducers=1)]

    def words(self, key, line):
        for word in line.split():
            yield word, 1

    def count(self, word, counts):
        yield word, sum(counts)

    def to_one_key(self, word, count):
        yield "top", (count, word)

    def top(self, _, pairs):
        for count, word in heapq.nlargest(100, pairs):
            yield word, count
