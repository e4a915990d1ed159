"""Shell syntax in a command string that will run without a shell.

saline runs commands as argv (no shell) unless ``shell: true`` is given, so
``echo x >> /tmp/f`` would run ``echo`` with the arguments ``x``, ``>>`` and ``/tmp/f``.
Rather than guess, a command holding shell syntax outside quotes — pipes, redirections,
``&&``, ``||``, ``;``, ``&``, command substitution (``$(...)``, backticks, also inside
double quotes) and globs (``*``, ``?``, ``[``) — is refused before it runs, with what to
do. Quoted text is data: ``echo 'a > b'`` has no shell syntax.
"""

_OPERATORS = ("&&", "||", ">>", "<<", "$(", "|", ">", "<", ";", "&", "`")
_GLOBS = ("*", "?", "[")

#: what to tell the author
ADVICE = "add `shell: true` (or `python_shell: true`), or split the arguments"


def shell_syntax(command: str) -> list[str]:
    """The shell operators and globs ``command`` uses outside quotes, in order, once each."""
    found: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(command):
        ch = command[i]
        if quote == "'":
            quote = None if ch == "'" else quote
            i += 1
            continue
        if ch == "\\":
            i += 2  # an escaped character is data
            continue
        if quote == '"':
            if ch == '"':
                quote = None
            elif command.startswith(("$(", "`"), i):  # a shell would still run these
                op = "$(" if ch == "$" else "`"
                if op not in found:
                    found.append(op)
            i += 1
            continue
        if ch in "'\"":
            quote = ch
            i += 1
            continue
        for op in (*_OPERATORS, *_GLOBS):
            if command.startswith(op, i):
                if op not in found:
                    found.append(op)
                i += len(op)
                break
        else:
            i += 1
    return found


def refusal(command: str, where: str) -> str | None:
    """The error for ``command`` (named by ``where``) if it needs a shell; else None."""
    ops = shell_syntax(command)
    if not ops:
        return None
    shown = " ".join(f"`{op}`" for op in ops)
    return f"{where}: {command!r} uses shell syntax ({shown}) but runs without a shell: {ADVICE}"
