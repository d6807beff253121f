"""Three steps, with a map-only middle step and a reduce-only last step: words are
counted, the middle step re-keys each (word, count) by the word's first letter, and the
last step (no map) sums the counts of each letter."""
from blfsd import Job, Step


class Letters(Job):
    def steps(self):
        return [Step(map=self.words, combine=self.total, reduce=self.total, reducers=3),
                Step(map=self.by_letter),
                Step(reduce=self.total, reducers=2)]

    def words(self, key, line):
        for word in line.split():
            yield word, 1

    def total(self, key, counts):
        yield key, sum(counts)

    def by_letter(self, word, count):
        yield word[0], count
