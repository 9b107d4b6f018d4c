"""The offline Wikipedia stand-in: a real HTTP server on 127.0.0.1 speaking the MediaWiki
Action API subset wikifaces uses, serving real photographs as the upload host."""

from .corpus import Corpus, FileInfo, Person, build_corpus
from .server import TOKEN, Fault, LoggedRequest, StandinServer

__all__ = ["TOKEN", "Corpus", "Fault", "FileInfo", "LoggedRequest", "Person", "StandinServer", "build_corpus"]
