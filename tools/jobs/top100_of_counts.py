"""The second of two separate jobs: the 100 most frequent words of word count's output
(its part files, `word<TAB>count` lines)."""
import heapq

from blfsd import Job


class Top100OfCounts(Job):
    reducers = 1

    def map(self, key, line):
        word, _, count = line.rpartition("\t")
        yield "top", (int(count), word)

    def reduce(self, _, pairs):
        for count, word in heapq.nlargest(100, pairs):
            yield word, count
