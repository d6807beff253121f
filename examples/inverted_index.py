"""Inverted index: for each word, the documents it appears in.

Each input file is one document (``input_format = "files"``: one map task per file,
key = the file's path, value = its whole text). A word is a maximal run of letters
(Unicode letters, no digits or underscores), lower-cased. Documents are named by their
basename, so give files with distinct basenames.

Output: one line per word, ``word<TAB>["doc1", "doc2", ...]`` -- a JSON list of the
distinct documents containing the word, sorted. (The MIT 6.5840 lab indexer prints
``word count doc1,doc2``; the count is simply the length of this list.)

Run it::

    blfs submit examples/inverted_index.py --input a.txt --input b.txt --output out --local
"""
import os
import re

from blfsd import Job

WORD = re.compile(r"[^\W\d_]+")


class InvertedIndex(Job):
    input_format = "files"

    def map(self, key, value):
        doc = os.path.basename(key)
        for word in set(WORD.findall(value.lower())):
            yield word, doc

    def reduce(self, key, values):
        yield key, sorted(set(values))
