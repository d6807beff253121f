"""The N most frequent words (N = the first job argument, default 10): two steps.

Step 1 counts words (map, combine, reduce, as wordcount.py); step 2 sends every (word,
count) to one reduce, which keeps the N largest. The counts of step 1 never leave the
shared disks: they are segments that step 2's maps read.

    blfs submit examples/top_words.py --input books/ --output top --local -- 20
"""
import heapq

from blfsd import Job, Step


class TopWords(Job):
    def steps(self):
        return [Step(map=self.words, combine=self.count, reduce=self.count),
                Step(map=self.to_one_key, reduce=self.top, reducers=1)]

    def words(self, key, line):
        for word in line.split():
            yield word.lower(), 1

    def count(self, word, counts):
        yield word, sum(counts)

    def to_one_key(self, word, count):
        yield "top", (count, word)

    def top(self, _, pairs):
        n = int(self.args[0]) if self.args else 10
        for count, word in heapq.nlargest(n, pairs):
            yield word, count
