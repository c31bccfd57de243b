"""One exception type for bad input: the CLI prints its message as one line and exits 1."""


class OrtBenchError(Exception):
    """Bad input or a refused operation. The message says what is wrong and where, on one line:
    text from elsewhere (a YAML parser's report, a stranger's template) has its line breaks folded."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))


def one_line(exc: BaseException) -> str:
    """`TypeName: first line` of a third-party exception, for a one-line error message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
