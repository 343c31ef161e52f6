"""Server-sent events: iterate the data of each event of a text/event-stream.

Lines may end in \\n, \\r\\n or \\r; an event is the data: lines before a blank
line, joined by \\n; comment lines (": ping") and other fields are skipped.
"""


def iter_lines(raw):
    """Lines of a binary stream without their terminators, whatever they are."""
    pending = b""
    while True:
        block = raw.read1(65536) if hasattr(raw, "read1") else raw.read(65536)
        if not block:
            break
        pending += block
        start = 0
        while True:
            i_n = pending.find(b"\n", start)
            i_r = pending.find(b"\r", start)
            if i_n < 0 and i_r < 0:
                break
            if i_r >= 0 and (i_n < 0 or i_r < i_n):
                if i_r + 1 == len(pending):  # a \r at the end: maybe \r\n split
                    break
                end, nxt = i_r, i_r + (2 if pending[i_r + 1:i_r + 2] == b"\n" else 1)
            else:
                end, nxt = i_n, i_n + 1
            yield pending[start:end]
            start = nxt
        pending = pending[start:]
    if pending:
        yield pending.rstrip(b"\r")


def iter_events(raw):
    """The data string of each complete event (decoded as UTF-8)."""
    data = []
    for line in iter_lines(raw):
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if name != b"data":
            continue
        if value.startswith(b" "):
            value = value[1:]
        data.append(value.decode("utf-8"))
