#!/usr/bin/python3
"""Builds the ML-100K evaluation split from a MovieLens 100K download.

    scripts/ml100k_split.py --ml100k ml-100k --out data [--force]

Reads u.data, u.user, u.item and u.occupation (latin-1) of
https://files.grouplens.org/datasets/movielens/ml-100k.zip, and u.info when present
to check the counts. Writes, tab separated, no header, sorted by user (or item), then
by (timestamp, item):

    OUT/train.tsv, test_warm.tsv, test_cold.tsv   user item rating timestamp
    OUT/users.tsv      user gender occupation age_bucket zip_bucket
    OUT/items.tsv      item year_bucket g0 .. g18
    OUT/SHA256SUMS     checksums of the five files above and of val/'s three splits
    OUT/val/           the validation split of OUT/train.tsv (+ users.tsv, items.tsv)
    OUT/cold5/, OUT/val/cold5/
                       the cold users' first 5 events as history.tsv, the rest as
                       test_cold.tsv; the other files copied from the parent

The rules:

* every rating is one positive interaction;
* test split: users with id % 10 == 0 are cold (all their rows in test_cold.tsv); every
  other user's rows, sorted by (timestamp, item), keep the first n - max(1, n // 5) in
  train.tsv and the rest go to test_warm.tsv;
* validation split: the same rule applied to train.tsv, cold users id % 10 == 5;
* features: gender M = 0, F = 1; occupation = line index in u.occupation; age bucket =
  number of the edges 18 25 35 45 50 56 that are <= age; zip bucket = first character
  if a digit, else 10; year bucket from the release date: < 1940 -> 0, 1940s..1980s ->
  1..5, 1990-1992 -> 6, 1993..1998 -> 7..12, no date -> 13; the 19 genre flags.

The output is deterministic: the same download gives the same bytes. Errors in an
input name the file and line; the exit status is then 1 (2 for a usage error).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
from typing import Callable, Iterator, NamedTuple, Sequence

AGE_EDGES = (18, 25, 35, 45, 50, 56)
GENRE_FLAGS = 19
ITEM_FIELDS = 5 + GENRE_FLAGS          # id|title|release|video release|url|flags
NUMBER = re.compile(r"[0-9]+")
RELEASE_DATE = re.compile(r"\d{1,2}-[A-Za-z]{3}-(\d{4})")
SPLIT_FILES = ("train.tsv", "test_warm.tsv", "test_cold.tsv")
FEATURE_FILES = ("users.tsv", "items.tsv")


class InputError(Exception):
    """A problem with an input file, reported as FILE:LINE: message."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class Rating(NamedTuple):
    user: int
    item: int
    rating: int
    timestamp: int


Row = Sequence[object]                 # one output line, its fields in order


class Split(NamedTuple):
    train: list[Rating]
    test_warm: list[Rating]
    test_cold: list[Rating]


# ---------------------------------------------------------------------------- reading

def numbered_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) of a latin-1 text file; blank lines skipped."""
    try:
        with open(path, encoding="latin-1", newline="") as f:
            for number, line in enumerate(f, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
    except OSError as e:
        raise InputError(path, None, f"cannot read: {e.strerror}") from None


def to_int(text: str, path: str, line: int, field: str) -> int:
    """A non-negative decimal integer, digits only."""
    if not NUMBER.fullmatch(text):
        raise InputError(path, line, f"{field} is not an integer: {text!r}")
    return int(text)


def read_ratings(path: str, user_ids: set[int], item_ids: set[int]) -> list[Rating]:
    """u.data: user<TAB>item<TAB>rating<TAB>timestamp, one (user, item) pair per line,
    users and items known to u.user and u.item."""
    ratings: list[Rating] = []
    first_line: dict[tuple[int, int], int] = {}
    for number, line in numbered_lines(path):
        fields = line.split("\t")
        if len(fields) != 4:
            raise InputError(path, number,
                             f"expected 4 tab-separated fields, found {len(fields)}")
        user, item, rating, timestamp = (
            to_int(text, path, number, name)
            for text, name in zip(fields, ("user", "item", "rating", "timestamp")))
        if not 1 <= rating <= 5:
            raise InputError(path, number, f"rating {rating} is not in 1..5")
        if user not in user_ids:
            raise InputError(path, number, f"user {user} is not in u.user")
        if item not in item_ids:
            raise InputError(path, number, f"item {item} is not in u.item")
        if (user, item) in first_line:
            raise InputError(path, number, f"user {user} rated item {item} already "
                             f"on line {first_line[user, item]}")
        first_line[user, item] = number
        ratings.append(Rating(user, item, rating, timestamp))
    if not ratings:
        raise InputError(path, None, "no ratings")
    return ratings


def read_occupations(path: str) -> dict[str, int]:
    """u.occupation: one name per line; the index is the line's rank."""
    index: dict[str, int] = {}
    for number, line in numbered_lines(path):
        name = line.strip()
        if name in index:
            raise InputError(path, number, f"occupation {name!r} listed twice")
        index[name] = len(index)
    return index


def age_bucket(age: int) -> int:
    return sum(1 for edge in AGE_EDGES if age >= edge)


def zip_bucket(zip_code: str) -> int:
    return int(zip_code[0]) if zip_code and zip_code[0] in "0123456789" else 10


def year_bucket(year: int | None) -> int:
    if year is None:
        return 13
    if year < 1940:
        return 0
    if year < 1990:
        return 1 + (year - 1940) // 10
    if year <= 1992:
        return 6
    return 7 + (year - 1993)


def read_users(path: str, occupations: dict[str, int]) -> list[Row]:
    """u.user: id|age|gender|occupation|zip -> (user, gender, occupation, age, zip)."""
    users: dict[int, Row] = {}
    for number, line in numbered_lines(path):
        fields = line.split("|")
        if len(fields) != 5:
            raise InputError(path, number,
                             f"expected 5 '|'-separated fields, found {len(fields)}")
        user = to_int(fields[0], path, number, "user id")
        age = to_int(fields[1], path, number, "age")
        gender = {"M": 0, "F": 1}.get(fields[2])
        if gender is None:
            raise InputError(path, number, f"gender is not M or F: {fields[2]!r}")
        if fields[3] not in occupations:
            raise InputError(path, number, f"occupation {fields[3]!r} is not in u.occupation")
        if user in users:
            raise InputError(path, number, f"user {user} listed twice")
        users[user] = (user, gender, occupations[fields[3]], age_bucket(age),
                       zip_bucket(fields[4].strip()))
    return [users[user] for user in sorted(users)]


def read_items(path: str) -> list[Row]:
    """u.item: id|title|release date|video release|url|19 genre flags ->
    (item, year bucket, flags...)."""
    items: dict[int, Row] = {}
    for number, line in numbered_lines(path):
        fields = line.split("|")
        if len(fields) != ITEM_FIELDS:
            raise InputError(path, number, f"expected {ITEM_FIELDS} '|'-separated "
                             f"fields, found {len(fields)}")
        item = to_int(fields[0], path, number, "item id")
        release = fields[2].strip()
        match = RELEASE_DATE.fullmatch(release)
        if release and not match:
            raise InputError(path, number,
                             f"release date is not like 01-Jan-1995: {release!r}")
        flags = [to_int(flag, path, number, "genre flag") for flag in fields[5:]]
        if any(flag not in (0, 1) for flag in flags):
            raise InputError(path, number, "a genre flag is not 0 or 1")
        if item in items:
            raise InputError(path, number, f"item {item} listed twice")
        items[item] = (item, year_bucket(int(match.group(1)) if match else None), *flags)
    return [items[item] for item in sorted(items)]


def check_info(path: str, counts: dict[str, int]) -> None:
    """u.info ('943 users' ...), when the download has it, must match what was read."""
    if not os.path.exists(path):
        return
    for number, line in numbered_lines(path):
        fields = line.split()
        if len(fields) == 2 and fields[1] in counts:
            expected = to_int(fields[0], path, number, fields[1])
            if counts[fields[1]] != expected:
                raise InputError(path, number, f"says {expected} {fields[1]}, the "
                                 f"files have {counts[fields[1]]}: truncated download?")


# ---------------------------------------------------------------------------- splitting

def by_user(ratings: list[Rating]) -> dict[int, list[Rating]]:
    groups: dict[int, list[Rating]] = {}
    for rating in ratings:
        groups.setdefault(rating.user, []).append(rating)
    return groups


def chronological(ratings: list[Rating]) -> list[Rating]:
    """Sorted by (timestamp, item): the item id breaks the many timestamp ties."""
    return sorted(ratings, key=lambda r: (r.timestamp, r.item))


def split_users(ratings: list[Rating], is_cold: Callable[[int], bool]) -> Split:
    """Cold users: every row to test_cold. Others: the last max(1, n // 5) rows
    (by timestamp, item) to test_warm, the rest to train."""
    split = Split([], [], [])
    for user, rows in sorted(by_user(ratings).items()):
        rows = chronological(rows)
        if is_cold(user):
            split.test_cold.extend(rows)
            continue
        n_train = len(rows) - max(1, len(rows) // 5)
        split.train.extend(rows[:n_train])
        split.test_warm.extend(rows[n_train:])
    return split


def cold_history(test_cold: list[Rating], n: int) -> tuple[list[Rating], list[Rating]]:
    """Each cold user's first n rows (by timestamp, item) and the rest."""
    history: list[Rating] = []
    targets: list[Rating] = []
    for _, rows in sorted(by_user(test_cold).items()):
        rows = chronological(rows)
        history.extend(rows[:n])
        targets.extend(rows[n:])
    return history, targets


# ---------------------------------------------------------------------------- writing

def write_tsv(path: str, rows: Sequence[Row]) -> None:
    with open(path, "w", encoding="ascii", newline="\n") as f:
        f.writelines("\t".join(str(field) for field in row) + "\n" for row in rows)


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_split(out: str, split: Split, users: list[Row], items: list[Row]) -> None:
    os.makedirs(out, exist_ok=True)
    for name, rows in zip(SPLIT_FILES, split):
        write_tsv(os.path.join(out, name), rows)
    write_tsv(os.path.join(out, "users.tsv"), users)
    write_tsv(os.path.join(out, "items.tsv"), items)


def write_cold_history(parent: str, split: Split, n: int) -> str:
    """PARENT/coldN: the parent's files, its cold rows cut into history and targets."""
    out = os.path.join(parent, f"cold{n}")
    os.makedirs(out, exist_ok=True)
    for name in ("train.tsv", "test_warm.tsv") + FEATURE_FILES:
        shutil.copyfile(os.path.join(parent, name), os.path.join(out, name))
    history, targets = cold_history(split.test_cold, n)
    write_tsv(os.path.join(out, "history.tsv"), history)
    write_tsv(os.path.join(out, "test_cold.tsv"), targets)
    return out


def write_checksums(out: str) -> None:
    names = [*SPLIT_FILES, *FEATURE_FILES, *(f"val/{name}" for name in SPLIT_FILES)]
    with open(os.path.join(out, "SHA256SUMS"), "w", encoding="ascii", newline="\n") as f:
        f.writelines(f"{sha256(os.path.join(out, name))}  {name}\n" for name in names)


def summary(name: str, rows: list[Rating]) -> str:
    return (f"{name:<18} {len(rows):6d} rows {len({r.user for r in rows}):4d} users "
            f"{len({r.item for r in rows}):5d} items")


# ---------------------------------------------------------------------------- main

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Builds the ML-100K evaluation split (train / test / validation / "
                    "cold-start files) from a MovieLens 100K download.")
    parser.add_argument("--ml100k", required=True, metavar="DIR",
                        help="the unpacked ml-100k directory (u.data, u.user, ...)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory; must be empty or absent")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty --out, replacing the split's files")
    parser.add_argument("--history", type=int, default=5, metavar="N",
                        help="cold-start history length: OUT/coldN, OUT/val/coldN "
                             "(default 5)")
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = parser.parse_args(argv)
    if args.history < 1:
        parser.error("--history must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.path.isdir(args.out) and os.listdir(args.out) and not args.force:
        print(f"error: {args.out} is not empty (use --force to write into it)",
              file=sys.stderr)
        return 1
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f"error: {args.out} is not a directory", file=sys.stderr)
        return 1
    raw = args.ml100k
    try:
        users = read_users(os.path.join(raw, "u.user"),
                           read_occupations(os.path.join(raw, "u.occupation")))
        items = read_items(os.path.join(raw, "u.item"))
        ratings = read_ratings(os.path.join(raw, "u.data"), {row[0] for row in users},
                               {row[0] for row in items})
        check_info(os.path.join(raw, "u.info"),
                   {"users": len(users), "items": len(items), "ratings": len(ratings)})
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    test = split_users(ratings, lambda user: user % 10 == 0)
    val = split_users(test.train, lambda user: user % 10 == 5)
    val_dir = os.path.join(args.out, "val")
    write_split(args.out, test, users, items)
    write_split(val_dir, val, users, items)
    write_checksums(args.out)
    write_cold_history(args.out, test, args.history)
    write_cold_history(val_dir, val, args.history)
    if not args.quiet:
        for name, split in (("", test), ("val/", val)):
            for file_name, rows in zip(SPLIT_FILES, split):
                print(summary(name + file_name, rows))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
