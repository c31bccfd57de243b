"""One exception type for bad input: the CLI prints its message as one line and exits 1."""


class OrtBenchError(Exception):
    """Bad input or a refused operation. The message says what is wrong and where, on one line:
    text from elsewhere (a YAML parser's report, a stranger's template) has its line breaks folded."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
