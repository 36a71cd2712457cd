"""Tests for the raw Amazon -> RecBole atomic file converter."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recbole_sae.data.amazon import (
    convert_amazon,
    format_categories,
    k_core_filter,
    main,
    parse_line,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _review(user, asin, ts):
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": ts, "overall": 5.0})


def _review_lines():
    """Reviews in file order.

    Core: U1..U5 x I1..I5 (25 pairs). X has 4 reviews (dropped in round 1), which
    takes item F down to 4 (dropped in round 2), which takes Y1..Y4 down to 4
    (dropped in round 3). U1 reviews I1 twice; the second, earlier one is kept.
    """
    lines = [_review("X", a, 10) for a in ("F", "I1", "I2", "I3")]
    # U2: file order shuffled, time order I3, I1, I2, I5, I4
    lines += [
        _review("U2", "I1", 200),
        _review("U2", "I3", 100),
        _review("U2", "I4", 500),
        _review("U2", "I2", 300),
        _review("U2", "I5", 400),
    ]
    for y in ("Y1", "Y2", "Y3", "Y4"):
        lines += [_review(y, a, 20) for a in ("F", "I1", "I2", "I3", "I4")]
    lines.append("{this is not json")  # malformed
    lines.append(json.dumps({"reviewerID": "U9", "asin": "I1"}))  # missing time
    lines.append(json.dumps({"reviewerID": "U9", "asin": "I1", "unixReviewTime": "soon"}))
    lines.append("")  # blank: skipped, not counted
    # U1: duplicate I1 (later line has the earlier time), tie I2/I3 at 1100
    lines += [
        _review("U1", "I1", 1000),
        _review("U1", "I2", 1100),
        _review("U1", "I3", 1100),
        _review("U1", "I1", 900),
        _review("U1", "I4", 1200),
        _review("U1", "I5", 1300),
    ]
    # U3: reverse order in time; one line as a Python literal
    lines += [
        _review("U3", "I1", 90),
        _review("U3", "I2", 80),
        "{'reviewerID': 'U3', 'asin': 'I3', 'unixReviewTime': 70}",
        _review("U3", "I4", 60),
        _review("U3", "I5", 50),
    ]
    for user, base in (("U4", 2000), ("U5", 3000)):
        lines += [_review(user, f"I{j}", base + j - 1) for j in range(1, 6)]
    return lines


def _meta_lines():
    return [
        json.dumps(
            {
                "asin": "I1",
                "title": "OPI Nail\tLacquer,\nRed  Shimmer",
                "brand": "OPI",
                "categories": [["Beauty", "Makeup", "Nails", "Nail Polish"], ["Beauty", "Tools"]],
                "price": 7.5,
            }
        ),
        # Python literal (single quotes), non-Beauty path listed first
        "{'asin': 'I2', 'title': \"Bob's Balm &amp; Butter\", 'brand': 'Bob', "
        "'categories': [['Skin Care', 'Body'], ['Beauty', 'Skin Care', 'Body', 'Moisturizers']], "
        "'price': 12.99}",
        json.dumps({"asin": "I3", "categories": [["Beauty", "Skin Care", "Face"]]}),
        json.dumps(
            {
                "asin": "I4",
                "title": "Floss",
                "categories": [["Health & Personal Care", "Oral Care"]],
                "price": "$3",
            }
        ),
        json.dumps({"asin": "F", "title": "Filtered away", "categories": [["Beauty"]]}),
        "{'asin': 'I5', 'title': 'broken",  # malformed: neither JSON nor a literal
        "{'title': 'no asin here'}",  # malformed: missing asin
        "",
    ]


def _write(path: Path, lines, gz: bool):
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def raw(tmp_path):
    reviews = _write(tmp_path / "reviews_Beauty_5.json.gz", _review_lines(), gz=True)
    meta = _write(tmp_path / "meta_Beauty.json.gz", _meta_lines(), gz=True)
    return reviews, meta


EXPECTED_INTER = """user_id:token\titem_id:token\ttimestamp:float
1\t1\t100
1\t2\t200
1\t3\t300
1\t4\t400
1\t5\t500
2\t2\t900
2\t3\t1100
2\t1\t1100
2\t5\t1200
2\t4\t1300
3\t4\t50
3\t5\t60
3\t1\t70
3\t3\t80
3\t2\t90
4\t2\t2000
4\t3\t2001
4\t1\t2002
4\t5\t2003
4\t4\t2004
5\t2\t3000
5\t3\t3001
5\t1\t3002
5\t5\t3003
5\t4\t3004
"""

EXPECTED_ITEM = (
    "item_id:token\tasin:token\ttitle:token\tbrand:token\tcategories:token_seq\tprice:float\n"
    "1\tI3\t\t\tSkin Care|Face\t\n"
    "2\tI1\tOPI Nail Lacquer, Red Shimmer\tOPI\tMakeup|Nails|Nail Polish\t7.5\n"
    "3\tI2\tBob's Balm & Butter\tBob\tSkin Care|Body|Moisturizers\t12.99\n"
    "4\tI5\t\t\t\t\n"
    "5\tI4\tFloss\t\tHealth & Personal Care|Oral Care\t3.0\n"
)

EXPECTED_SUMMARY = {
    "reviews_lines": 53,
    "reviews_malformed": 3,
    "meta_lines": 7,
    "meta_malformed": 2,
    "duplicates_dropped": 1,
    "interactions_before_core": 49,
    "core": 5,
    "core_rounds": 3,
    "interactions": 25,
    "users": 5,
    "items": 5,
    "items_without_meta": 1,
}


@pytest.mark.parametrize("meta_gz", [True, False])
def test_convert_function(tmp_path, meta_gz):
    reviews = _write(tmp_path / "reviews.json.gz", _review_lines(), gz=True)
    meta = _write(tmp_path / "meta.json", _meta_lines(), gz=meta_gz)
    out = tmp_path / "dataset" / "amazon-beauty"
    summary = convert_amazon(reviews, meta, out, "amazon-beauty", core=5)
    inter = (out / "amazon-beauty.inter").read_text(encoding="utf-8")
    item = (out / "amazon-beauty.item").read_text(encoding="utf-8")
    assert inter == EXPECTED_INTER
    assert item == EXPECTED_ITEM
    for key, value in EXPECTED_SUMMARY.items():
        assert summary[key] == value, key
    assert summary["inter_file"] == str(out / "amazon-beauty.inter")
    # every row has the header's number of columns
    for text, ncol in ((inter, 3), (item, 6)):
        assert all(len(line.split("\t")) == ncol for line in text.splitlines())
    assert not list(out.glob("*.tmp*"))


def test_name_defaults_to_out_dir(raw, tmp_path):
    reviews, meta = raw
    summary = convert_amazon(reviews, meta, tmp_path / "mydata", core=5)
    assert Path(summary["item_file"]).name == "mydata.item"


def test_core_one_keeps_everything(raw, tmp_path):
    reviews, meta = raw
    summary = convert_amazon(reviews, meta, tmp_path / "o", "o", core=1)
    assert summary["interactions"] == 49
    assert summary["users"] == 10  # X, U2, Y1..Y4, U1, U3, U4, U5
    assert summary["items"] == 6
    assert summary["core_rounds"] == 0
    lines = (tmp_path / "o" / "o.inter").read_text().splitlines()[1:]
    # X appears first in the file -> user 1; its items by time then file order: F, I1, I2, I3
    assert lines[:4] == ["1\t1\t10", "1\t2\t10", "1\t3\t10", "1\t4\t10"]


def test_cli_subprocess(raw, tmp_path):
    reviews, meta = raw
    out = tmp_path / "dataset" / "amazon-beauty"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recbole_sae.data.amazon",
            "--reviews",
            str(reviews),
            "--meta",
            str(meta),
            "--out",
            str(out),
            "--name",
            "amazon-beauty",
            "--core",
            "5",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "amazon-beauty.inter").read_text(encoding="utf-8") == EXPECTED_INTER
    assert (out / "amazon-beauty.item").read_text(encoding="utf-8") == EXPECTED_ITEM
    assert "reviews_malformed" in proc.stdout and "meta_malformed" in proc.stdout


def test_cli_missing_file(raw, tmp_path):
    _, meta = raw
    missing = tmp_path / "nope.json.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "recbole_sae.data.amazon",
            "--reviews",
            str(missing),
            "--meta",
            str(meta),
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "not found" in proc.stderr and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_main_missing_meta_and_bad_core(raw, tmp_path, capsys):
    reviews, meta = raw
    assert main(["--reviews", str(reviews), "--meta", str(tmp_path / "x"), "--out", str(tmp_path)]) == 2
    assert "meta file not found" in capsys.readouterr().err
    assert main(["--reviews", str(reviews), "--meta", str(meta), "--out", str(tmp_path), "--core", "0"]) == 2
    with pytest.raises(FileNotFoundError):
        convert_amazon(tmp_path / "x", meta, tmp_path / "o", "o")


def test_parse_line_and_helpers():
    assert parse_line(b'{"asin": "A", "price": null}') == {"asin": "A", "price": None}
    assert parse_line("{'asin': 'A', 'categories': [['Beauty']]}") == {
        "asin": "A",
        "categories": [["Beauty"]],
    }
    assert parse_line("{'asin': ") is None
    assert parse_line("[1, 2]") is None
    assert parse_line(b"\xff\xfe{") is None
    assert format_categories([["Beauty", "Makeup", "Eyes"]]) == "Makeup|Eyes"
    assert format_categories([["Beauty"]]) == ""
    assert format_categories([["Beauty", "A|B"]]) == "A/B"
    assert format_categories(None) == ""
    rows = [("a", "x", 1), ("a", "y", 2), ("b", "x", 3)]
    assert k_core_filter(rows, 2) == ([], 2)
