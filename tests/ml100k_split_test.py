#!/usr/bin/python3
"""Tests of scripts/ml100k_split.py.

    ml100k_split_test.py reference --ml100k DIR --expected tests/data/ml100k_split.sha256
        Runs the script on the MovieLens 100K files in DIR and compares the SHA-256 of
        every file it writes with the expected list (no file missing, none extra).
        Exit status 77 (skipped by CTest) when DIR has no u.data.
    ml100k_split_test.py rules
        The split's rules, features and input errors on a small hand-made download.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import unittest

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "scripts", "ml100k_split.py")


def run_split(raw: str, out: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, "--ml100k", raw, "--out", out,
                           "--quiet", *extra], capture_output=True, text=True)


def tree_checksums(root: str) -> dict[str, str]:
    sums = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                sums[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return sums


def read_checksum_file(path: str) -> dict[str, str]:
    sums = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                digest, name = line.rstrip("\n").split("  ", 1)
                sums[name] = digest
    return sums


class ReferenceSplitTest(unittest.TestCase):
    ml100k = ""
    expected = ""

    def test_every_file_matches_the_reference_checksums(self) -> None:
        expected = read_checksum_file(self.expected)
        self.assertGreater(len(expected), 20)
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "split")
            result = run_split(self.ml100k, out)
            self.assertEqual(result.returncode, 0, result.stderr)
            actual = tree_checksums(out)
        self.assertEqual(sorted(actual), sorted(expected), "files written")
        wrong = [name for name in sorted(expected) if actual[name] != expected[name]]
        self.assertEqual(wrong, [], "files whose SHA-256 differs from the reference")


# A small download. Users 1..20 (cold: 10 and 20; validation cold: 5 and 15), items 1..12.
OCCUPATIONS = ["administrator", "artist", "other", "writer"]
USER_LINES = [f"{u}|{age}|{'F' if u % 2 else 'M'}|{OCCUPATIONS[u % 4]}|{zip_code}"
              for u, age, zip_code in zip(
                  range(1, 21),
                  [17, 18, 24, 25, 34, 35, 44, 45, 49, 50, 55, 56, 73, 30, 30, 30, 30, 30,
                   30, 30],
                  ["01234", "98101", "T8H1N", "", "5", "12345", "E2A4H", "00000", "1",
                   "2", "3", "4", "5", "6", "7", "8", "9", "L9G2B", "0", "1"])]
RELEASES = ["01-Jan-1995", "", "1-Feb-1939", "31-Dec-1940", "01-Jan-1989", "01-Jan-1990",
            "01-Jan-1992", "01-Jan-1993", "01-Jan-1998", "4-Feb-1971", "01-Jan-1996",
            "01-Jan-1997"]
ITEM_LINES = [f"{i}|Movie {i} (x)|{date}||http://x/{i}|" +
              "|".join("1" if g == i % 19 else "0" for g in range(19))
              for i, date in zip(range(1, 13), RELEASES)]
# (user, item, rating, timestamp), in file order.
RATINGS = (
    # user 1: ten rows at one timestamp, the item id orders them
    [(1, item, 4, 1000) for item in (7, 3, 9, 1, 10, 2, 8, 4, 6, 5)] +
    # user 2: four rows, timestamp before item id; max(1, 4 // 5) = 1 test row
    [(2, 1, 3, 400), (2, 2, 3, 300), (2, 3, 3, 200), (2, 4, 3, 100)] +
    # user 5: validation-cold
    [(5, item, 5, 2000 + item % 3) for item in range(1, 11)] +
    # user 10: cold, seven rows with ties
    [(10, item, 2, 3000 + item // 3) for item in (12, 11, 2, 5, 1, 7, 3)])


def write_download(directory: str) -> None:
    os.makedirs(directory)
    files = {
        "u.occupation": OCCUPATIONS,
        "u.user": USER_LINES,
        "u.item": ITEM_LINES,
        "u.data": ["\t".join(map(str, r)) for r in RATINGS],
        "u.info": ["20 users", f"{len(ITEM_LINES)} items", f"{len(RATINGS)} ratings"],
    }
    for name, lines in files.items():
        with open(os.path.join(directory, name), "w", encoding="latin-1") as f:
            f.write("".join(line + "\n" for line in lines))


def read_rows(path: str) -> list[list[int]]:
    with open(path, encoding="ascii") as f:
        return [[int(x) for x in line.rstrip("\n").split("\t")] for line in f]


def pairs(path: str) -> list[tuple[int, int]]:
    return [(row[0], row[1]) for row in read_rows(path)]


class DownloadTestCase(unittest.TestCase):
    """Each test gets a fresh hand-made download in self.raw and a split folder self.out to
    write (both in a temporary directory)."""

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.raw = os.path.join(self.tmp.name, "ml-100k")
        self.out = os.path.join(self.tmp.name, "split")
        write_download(self.raw)

    def tearDown(self) -> None:
        self.tmp.cleanup()


class SplitRulesTest(DownloadTestCase):
    def split(self) -> str:
        result = run_split(self.raw, self.out)
        self.assertEqual(result.returncode, 0, result.stderr)
        return self.out

    def test_warm_users_keep_their_first_80_percent_by_timestamp_then_item(self) -> None:
        out = self.split()
        self.assertEqual(pairs(os.path.join(out, "train.tsv")),
                         [(1, i) for i in range(1, 9)] + [(2, 4), (2, 3), (2, 2)] +
                         [(5, i) for i in (3, 6, 9, 1, 4, 7, 10, 2)])
        self.assertEqual(pairs(os.path.join(out, "test_warm.tsv")),
                         [(1, 9), (1, 10), (2, 1), (5, 5), (5, 8)])
        self.assertEqual(read_rows(os.path.join(out, "test_warm.tsv"))[2], [2, 1, 3, 400])

    def test_cold_users_are_all_test(self) -> None:
        out = self.split()
        self.assertEqual(pairs(os.path.join(out, "test_cold.tsv")),
                         [(10, i) for i in (1, 2, 3, 5, 7, 11, 12)])

    def test_validation_split_is_the_same_rule_on_train(self) -> None:
        out = self.split()
        val = os.path.join(out, "val")
        self.assertEqual(pairs(os.path.join(val, "train.tsv")),
                         [(1, i) for i in range(1, 8)] + [(2, 4), (2, 3)])
        self.assertEqual(pairs(os.path.join(val, "test_warm.tsv")), [(1, 8), (2, 2)])
        self.assertEqual(pairs(os.path.join(val, "test_cold.tsv")),
                         [(5, i) for i in (3, 6, 9, 1, 4, 7, 10, 2)])

    def test_cold_history_is_the_first_five_events(self) -> None:
        out = self.split()
        self.assertEqual(pairs(os.path.join(out, "cold5", "history.tsv")),
                         [(10, i) for i in (1, 2, 3, 5, 7)])
        self.assertEqual(pairs(os.path.join(out, "cold5", "test_cold.tsv")),
                         [(10, 11), (10, 12)])
        self.assertEqual(pairs(os.path.join(out, "val", "cold5", "history.tsv")),
                         [(5, i) for i in (3, 6, 9, 1, 4)])
        for name in ("train.tsv", "test_warm.tsv", "users.tsv", "items.tsv"):
            for parent in (out, os.path.join(out, "val")):
                with open(os.path.join(parent, name), "rb") as a, \
                     open(os.path.join(parent, "cold5", name), "rb") as b:
                    self.assertEqual(a.read(), b.read(), os.path.join(parent, name))

    def test_user_features(self) -> None:
        rows = read_rows(os.path.join(self.split(), "users.tsv"))
        self.assertEqual([r[0] for r in rows], list(range(1, 21)))
        self.assertEqual([r[1] for r in rows[:4]], [1, 0, 1, 0])            # F = 1
        self.assertEqual([r[2] for r in rows[:4]], [1, 2, 3, 0])            # occupation
        self.assertEqual([r[3] for r in rows[:13]],
                         [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6])            # age
        self.assertEqual([r[4] for r in rows[:9]], [0, 9, 10, 10, 5, 1, 10, 0, 1])

    def test_item_features(self) -> None:
        rows = read_rows(os.path.join(self.split(), "items.tsv"))
        self.assertEqual([r[1] for r in rows], [9, 13, 0, 1, 5, 6, 6, 7, 12, 4, 10, 11])
        self.assertEqual(rows[2], [3, 0] + [1 if g == 3 else 0 for g in range(19)])

    def test_checksum_file_lists_the_main_and_validation_files(self) -> None:
        out = self.split()
        sums = read_checksum_file(os.path.join(out, "SHA256SUMS"))
        self.assertEqual(list(sums), ["train.tsv", "test_warm.tsv", "test_cold.tsv",
                                      "users.tsv", "items.tsv", "val/train.tsv",
                                      "val/test_warm.tsv", "val/test_cold.tsv"])
        actual = tree_checksums(out)
        self.assertEqual({name: actual[name] for name in sums}, sums)


class InputErrorTest(DownloadTestCase):
    def replace_line(self, name: str, number: int, text: str) -> None:
        path = os.path.join(self.raw, name)
        with open(path, encoding="latin-1") as f:
            lines = f.read().split("\n")
        lines[number - 1] = text
        with open(path, "w", encoding="latin-1") as f:
            f.write("\n".join(lines))

    def assert_refused(self, message: str) -> None:
        result = run_split(self.raw, self.out)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(message, result.stderr)
        self.assertFalse(os.path.exists(self.out), "output written despite the error")

    def test_truncated_ratings_line(self) -> None:
        self.replace_line("u.data", 3, "1\t9\t4")
        self.assert_refused(os.path.join(self.raw, "u.data") + ":3: expected 4")

    def test_garbled_ratings_line(self) -> None:
        self.replace_line("u.data", 11, "2\t+1\t3\t400")
        self.assert_refused(os.path.join(self.raw, "u.data") +
                            ":11: item is not an integer: '+1'")
        self.replace_line("u.data", 11, "2\t1\t3\t400")
        self.replace_line("u.data", 12, "2\tx2\t3\t300")
        self.assert_refused(os.path.join(self.raw, "u.data") +
                            ":12: item is not an integer: 'x2'")

    def test_duplicate_rating(self) -> None:
        self.replace_line("u.data", 12, "2\t1\t3\t300")
        self.assert_refused(":12: user 2 rated item 1 already on line 11")

    def test_unknown_user_and_item(self) -> None:
        self.replace_line("u.data", 2, "21\t3\t4\t1000")
        self.assert_refused("u.data:2: user 21 is not in u.user")
        self.replace_line("u.data", 2, "1\t13\t4\t1000")
        self.assert_refused("u.data:2: item 13 is not in u.item")

    def test_malformed_user_and_item_lines(self) -> None:
        self.replace_line("u.user", 4, "4|25|X|other|02139")
        self.assert_refused(os.path.join(self.raw, "u.user") + ":4: gender is not M or F")
        self.replace_line("u.user", 4, "4|25|M|pilot|02139")
        self.assert_refused("u.user:4: occupation 'pilot' is not in u.occupation")
        self.replace_line("u.user", 4, "4|25|M|other|02139")
        self.replace_line("u.item", 5, "5|Movie 5|01-Jan-1989||http://x/5|0|1")
        self.assert_refused(os.path.join(self.raw, "u.item") + ":5: expected 24")

    def test_empty_ratings(self) -> None:
        open(os.path.join(self.raw, "u.data"), "w").close()
        self.assert_refused(os.path.join(self.raw, "u.data") + ": no ratings")

    def test_missing_file(self) -> None:
        os.remove(os.path.join(self.raw, "u.item"))
        self.assert_refused(os.path.join(self.raw, "u.item") + ": cannot read")

    def test_counts_that_disagree_with_u_info(self) -> None:
        path = os.path.join(self.raw, "u.data")
        with open(path, encoding="latin-1") as f:
            lines = f.readlines()
        with open(path, "w", encoding="latin-1") as f:
            f.writelines(lines[:-1])
        self.assert_refused(os.path.join(self.raw, "u.info") +
                            f":3: says {len(RATINGS)} ratings, the files have "
                            f"{len(RATINGS) - 1}")

    def test_non_empty_output_is_refused_unless_forced(self) -> None:
        os.makedirs(self.out)
        keep = os.path.join(self.out, "notes.txt")
        with open(keep, "w") as f:
            f.write("mine\n")
        result = run_split(self.raw, self.out)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(f"{self.out} is not empty", result.stderr)
        self.assertEqual(os.listdir(self.out), ["notes.txt"])
        result = run_split(self.raw, self.out, "--force")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(os.path.isfile(os.path.join(self.out, "cold5", "history.tsv")))
        self.assertTrue(os.path.isfile(keep))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=("reference", "rules"))
    parser.add_argument("--ml100k", help="the MovieLens 100K directory (reference)")
    parser.add_argument("--expected", help="the expected checksums (reference)")
    args = parser.parse_args()
    loader = unittest.defaultTestLoader
    if args.suite == "reference":
        if not (args.ml100k and args.expected):
            parser.error("reference needs --ml100k and --expected")
        if not os.path.isfile(os.path.join(args.ml100k, "u.data")):
            print(f"NOTE: {args.ml100k}/u.data not found: the reference split is not "
                  "checked (unpack ml-100k.zip there or set TWOTOWER_ML100K_DIR)")
            return SKIP
        ReferenceSplitTest.ml100k = args.ml100k
        ReferenceSplitTest.expected = args.expected
        tests = loader.loadTestsFromTestCase(ReferenceSplitTest)
    else:
        tests = unittest.TestSuite([loader.loadTestsFromTestCase(SplitRulesTest),
                                    loader.loadTestsFromTestCase(InputErrorTest)])
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(tests)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
