"""Reading what a user hands us: regular files only, within a size limit, and YAML that cannot explode.

Every file lstmbench reads from a user (a suite, a data table, a lengths file, a result file) comes through
`read_text`, so a FIFO, a device or a folder is refused at once (not read forever), and a file too large to
be what it claims is refused by its size. Every YAML document (a suite, a `--set` value) comes through
`load_yaml`: its depth, its expanded size and its integers are bounded, and a key given twice in one mapping
is refused with the lines of both (PyYAML would silently keep the later one).
"""
from __future__ import annotations

import hashlib
import os
import stat
from typing import Any

import yaml

from ..errors import LstmbenchError
from .schema import short

KIB, MIB, GIB = 2**10, 2**20, 2**30
MAX_SUITE_BYTES = 1 * MIB  # a suite is a page of YAML; a megabyte is generous and still reads instantly
MAX_DATA_BYTES = 512 * MIB  # a .ts or .npz series file; beyond it the padded matrix would pass its own limit anyway
# A text table (.csv, .tsv, .jsonl; a long-format series .csv) becomes Python strings and numbers, 30-45x its size at
# the peak: at 32 MiB `lstmbench lengths` peaked at 1.0-1.4 GiB RSS (texts of ~100 or 2 characters), under a 2 GiB
# bound; very uneven lengths add the padded matrix, which MAX_PADDED_CELLS caps (99 MB had needed 5.4 GiB)
MAX_TABLE_BYTES = 32 * MIB
MAX_LENGTHS_BYTES = 64 * MIB  # one integer a line: millions of lengths
MAX_SOURCE_BYTES = 1 * MIB  # a model factory's Python file
MAX_RESULTS_BYTES = 1 * GIB  # a result file of one invocation: a row is a few KiB
MAX_YAML_DEPTH = 32  # a suite nests four levels; 32 leaves room for any sweep value and stops a bomb
MAX_YAML_VALUES = 10_000  # values after aliases are expanded; a suite has about a hundred
MAX_INT_DIGITS = 20  # 2**64 has 20 digits: no setting of a suite needs more (a seed, at most 2**32)


class Unreadable(LstmbenchError):
    """A path that is not a regular, readable, small enough file; the message says which and why."""


def read_text(path: str | os.PathLike, limit: int, what: str, encoding: str = "utf-8-sig") -> str:
    """The text of a regular file of at most `limit` bytes. `utf-8-sig` drops a byte-order mark (Excel
    writes one) and is otherwise UTF-8. `what` names the file in messages (e.g. 'a suite file')."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise Unreadable(f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start:,})") from None


def read_bytes(path: str | os.PathLike, limit: int, what: str) -> bytes:
    name = os.fspath(path)
    if "\0" in name:
        raise Unreadable(f"{name!r}: a path cannot contain a NUL byte")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; the file's kind is checked before any read
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise Unreadable(f"{name}: no such file") from None
    except OSError as e:
        raise Unreadable(f"{name}: cannot read: {e.strerror or e}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # before fdopen, which refuses a folder with a traceback of its own
        os.close(fd)
        raise Unreadable(f"{name}: {kind(info.st_mode)}, not a regular file; {what} must be a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise Unreadable(f"{name}: {size(info.st_size)}, over the limit of {size(limit)} for {what}")
        os.set_blocking(fd, True)
        try:  # read(limit + 1) would reserve the whole limit (512 MiB for a data file) whatever the file's size
            data = f.read(info.st_size + 1)
            if len(data) > info.st_size:  # it grew since fstat: read on, to the limit
                data += f.read(limit + 1 - len(data))
        except OSError as e:
            raise Unreadable(f"{name}: cannot read: {e.strerror or e}") from None
    if len(data) > limit:  # it grew while we read
        raise Unreadable(f"{name}: over the limit of {size(limit)} for {what}")
    return data


def is_regular(path: os.PathLike) -> bool:
    """A regular file (following links), without opening it: a FIFO or device is not."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


# ----------------------------------------------------------------------------- YAML
class _Loader(yaml.SafeLoader):
    """SafeLoader with bounded depth and integers, and duplicate keys refused."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                                                  self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_yaml_int(self, node: Any) -> int:
        written = str(node.value).replace("_", "")
        # decide on the text first: int() of thousands of digits is slow, and refused by Python past 4,300
        value = super().construct_yaml_int(node) if len(written) <= MAX_INT_DIGITS + 3 else None
        if value is None or abs(value) >= 2**64:
            digits = f"{len(str(abs(value)))} digits" if value is not None else f"{len(written):,} digits"
            raise yaml.constructor.ConstructorError(None, None, f"an integer of {digits}; no setting takes one "
                                                                "beyond 2**64", node.start_mark)
        return value

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue  # `<<: *base` may be overridden by the keys beside it: that is what merge is for
                key = (key_node.tag, key_node.value)
                if key in seen:
                    first = seen[key].start_mark
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {short(key_node.value)} is given twice in one mapping (first "
                                    f"at line {first.line + 1}); the later would silently replace the first",
                        key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


class YamlRefused(LstmbenchError):
    """YAML that cannot be read or is refused; `where` is 'line L, column C: ' or ''."""

    def __init__(self, where: str, problem: str):
        self.where, self.problem = where, problem
        super().__init__(f"{where}{problem}")


def load_yaml(text: str) -> Any:
    """Parse one YAML document safely (no Python objects) within the bounds above."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise YamlRefused(where, problem) from None
    except RecursionError:  # a bound above was not enough for some construct: refuse, never a traceback
        raise YamlRefused("", f"nested too deeply (the limit is {MAX_YAML_DEPTH} levels)") from None
    count_values(value)
    return value


def count_values(value: Any) -> int:
    """How many values `value` holds with aliases expanded; refuses past MAX_YAML_VALUES without expanding
    (an alias bomb of a kilobyte stands for billions of values, and a self-referencing alias for infinity)."""
    count, stack = 0, [value]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise YamlRefused("", f"expands to more than {MAX_YAML_VALUES:,} values (aliases repeating aliases?); "
                                  "a suite holds a few hundred")
        if isinstance(node, dict):
            stack += node.keys()
            stack += node.values()
        elif isinstance(node, list):
            stack += node
    return count


def safe_name(text: str, limit: int = 60) -> str:
    """`text` (from a row or a suite: a device, a configuration hash) as part of a file name: letters, digits,
    '_', '.' and '-' kept, anything else (a '/', a '..', a space) made '_'; where that changed the text or cut it
    to `limit`, a hash of the original follows, so different texts never share a name."""
    slug = "".join(c if c.isascii() and (c.isalnum() or c in "_.-") else "_" for c in text)[:limit].strip(".")
    if slug == text:
        return slug
    return f"{slug}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
