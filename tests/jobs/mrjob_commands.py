"""An mrjob job whose substeps are shell commands and pre-filters, fed into Python ones."""
from mrjob.job import MRJob
from mrjob.protocol import RawProtocol
from mrjob.step import MRStep


class MRCommands(MRJob):
    INPUT_PROTOCOL = RawProtocol  # the first Python substep reads the command's words

    def steps(self):
        return [MRStep(mapper_cmd="tr -s ' ' '\\n'", reducer_pre_filter="grep -v '^$'",
                       reducer=self.count),
                MRStep(mapper_pre_filter="grep -v fox", mapper=self.swap,
                       reducer_cmd="uniq -c")]

    def count(self, word, ones):
        yield word, sum(1 for _ in ones)

    def swap(self, word, n):
        yield n, word


if __name__ == "__main__":
    MRCommands.run()
