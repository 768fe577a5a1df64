"""Counting the words of a text file fetched over HTTP (`examples.wordcount.jobs:jobs`)."""
