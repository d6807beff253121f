"""An mrjob job using what the shipped examples do not: counters (with a comma), status,
FILES renamed with #, a file option, a passthrough option, --jobconf and --cmdenv seen
as environment variables, a jobconf reducer count, init/final methods in every task."""
import os

from mrjob.compat import jobconf_from_env
from mrjob.job import MRJob
from mrjob.step import MRStep


class MRFeatures(MRJob):
    FILES = ["mrjob_features_words.txt#known.txt"]
    JOBCONF = {"my.setting": "from-class", "mapreduce.job.reduces": "2"}

    def configure_args(self):
        super().configure_args()
        self.add_passthru_arg("--prefix", default="w")
        self.add_file_arg("--extra")

    def steps(self):
        return [MRStep(mapper_init=self.load_known, mapper=self.words,
                       mapper_final=self.map_done, combiner=self.add, reducer_init=self.load_extra,
                       reducer=self.describe),
                MRStep(reducer=self.keep, jobconf={"mapreduce.job.reduces": "1"})]

    def load_known(self):
        with open("known.txt") as f:
            self.known = set(f.read().split())
        self.lines = 0
        self.set_status("mapping")

    def words(self, _, line):
        self.lines += 1
        for word in line.split():
            if word in self.known:
                self.increment_counter("features", "known words, seen")
            yield f"{self.options.prefix}:{word}", 1

    def map_done(self):
        self.increment_counter("features", "lines", self.lines)
        yield "lines", self.lines

    def add(self, key, values):
        yield key, sum(values)

    def load_extra(self):
        with open(self.options.extra) as f:
            self.extra = f.read().strip()

    def describe(self, key, values):
        yield key, [sum(values), self.extra, jobconf_from_env("my.setting"),
                    jobconf_from_env("mapreduce.task.ismap"), os.environ.get("MY_CMDENV")]

    def keep(self, key, values):
        for value in values:
            yield key, value


if __name__ == "__main__":
    MRFeatures.run()
