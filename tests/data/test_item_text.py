"""Item text, titles and attribute matrices from RecBole datasets (the tiny dataset and ml-100k)."""

import logging

import pytest
import torch
from conftest import GENRES, write_tiny_dataset
from recbole.data import create_dataset

from recbole_sae.config import Config
from recbole_sae.data import item_text as item_text_mod
from recbole_sae.data.item_text import (
    compose_text,
    format_float,
    item_attribute_matrix,
    item_texts,
    item_titles,
)
from recbole_sae.errors import ConfigError

# ---------------------------------------------------------------------- the template
AMAZON = "{title}. Brand: {brand}. Categories: {categories}."
MOVIES = "{movie_title} ({release_year}). Genres: {class}."


@pytest.mark.parametrize(
    "template, values, expected",
    [
        (
            AMAZON,
            {"title": "Lip Gloss", "brand": "OPI", "categories": "Makeup, Lips"},
            "Lip Gloss. Brand: OPI. Categories: Makeup, Lips.",
        ),
        (AMAZON, {"title": "Lip Gloss", "brand": "", "categories": "Makeup"}, "Lip Gloss. Categories: Makeup."),
        (AMAZON, {"title": "", "brand": "OPI", "categories": ""}, "Brand: OPI."),
        (AMAZON, {"title": "", "brand": "", "categories": ""}, ""),
        (MOVIES, {"movie_title": "Heat", "release_year": "", "class": "Crime"}, "Heat. Genres: Crime."),
        (MOVIES, {"movie_title": "Heat", "release_year": "1995", "class": ""}, "Heat (1995)."),
        (MOVIES, {"movie_title": "", "release_year": "1995", "class": ""}, "(1995)."),
        ("{title}, by {brand}, {year}.", {"title": "Soap", "brand": "", "year": "2001"}, "Soap, 2001."),
        ("{title}, by {brand}.", {"title": "Soap", "brand": ""}, "Soap."),
        ("Name: {title}\nBrand: {brand}", {"title": "Soap", "brand": ""}, "Name: Soap"),
        ("{title} [{size} ml]!", {"title": "Soap", "size": ""}, "Soap!"),
    ],
)
def test_compose_text_drops_empty_segments(template, values, expected):
    assert compose_text(template, values) == expected


def test_format_float():
    assert [format_float(v) for v in (1995.0, 12.5, 12.345, 0.125, float("nan"), -3.0)] == [
        "1995",
        "12.5",
        "12.35",
        "0.125",
        "",
        "-3",
    ]
    assert format_float(3.14159, ".1f") == "3.1"


# ---------------------------------------------------------------------- the tiny dataset
def _dataset(data_path, name="tiny", yaml_file=None, **overrides):
    files = [yaml_file] if yaml_file else None
    config = Config("SASRec", name, files, {"data_path": data_path, "show_progress": False, **overrides})
    return config, create_dataset(config)


def _iid(dataset, token):
    return int(dataset.token2id(dataset.iid_field, str(token)))


def tiny_text(i):
    genre = GENRES[i % 5]
    genres = genre + (", Drama" if i % 7 == 0 and genre != "Drama" else "")
    return f"Movie {i} of {genre}. Genre: {genres}."


def test_tiny_item_texts_titles_and_attributes(tiny_dataset, in_tmp):
    data_path, name, yaml_file = tiny_dataset
    config, dataset = _dataset(data_path, name, yaml_file)
    texts = item_texts(dataset, config)
    assert len(texts) == dataset.item_num and texts[0] == ""
    for i in (1, 7, 14, 35, 40):
        assert texts[_iid(dataset, i)] == tiny_text(i)
    assert texts[_iid(dataset, 7)] == "Movie 7 of Comedy. Genre: Comedy, Drama."
    titles = item_titles(dataset, config)
    assert titles[0] == "" and titles[_iid(dataset, 7)] == "Movie 7 of Comedy"

    values, matrix = item_attribute_matrix(dataset, "genre")
    assert sorted(values) == sorted(GENRES)
    assert matrix.dtype == torch.bool and matrix.shape == (dataset.item_num, 5)
    assert not matrix[0].any()
    row = matrix[_iid(dataset, 7)]
    assert {values[j] for j in row.nonzero().flatten().tolist()} == {"Comedy", "Drama"}
    assert int(matrix[:, values.index("Western")].sum()) == 8  # items 5, 10, ..., 40
    assert matrix.sum(1)[1:].tolist() == [
        1
        + (
            int(dataset.id2token(dataset.iid_field, i)) % 7 == 0
            and GENRES[int(dataset.id2token(dataset.iid_field, i)) % 5] != "Drama"
        )
        for i in range(1, dataset.item_num)
    ]
    values_t, matrix_t = item_attribute_matrix(dataset, "title")  # a token field
    assert matrix_t.shape == (dataset.item_num, 40) and matrix_t.sum(1)[1:].eq(1).all()
    assert values_t[int(matrix_t[_iid(dataset, 3)].nonzero())] == "Movie 3 of Drama"

    # the same after RecBole converts its features to Interactions (build() before dataloaders)
    dataset.build()
    assert item_texts(dataset, config) == texts
    assert item_attribute_matrix(dataset, "genre")[1].equal(matrix)


def test_empty_fields_leave_no_junk_and_items_without_text_are_counted(tmp_path, in_tmp, caplog):
    folder = write_tiny_dataset(tmp_path / "data")
    lines = (folder / "tiny.item").read_text().splitlines()
    for i, (title, genre) in {3: ("Movie 3 of SciFi", ""), 4: ("", "Western"), 6: ("", ""), 9: ("", "")}.items():
        lines[i] = f"{i}\t{title}\t{genre}"
    (folder / "tiny.item").write_text("\n".join(lines) + "\n")
    config, dataset = _dataset(str(folder.parent), "tiny", str(folder / "tiny.yaml"))
    with caplog.at_level(logging.WARNING, logger=item_text_mod.__name__):
        texts = item_texts(dataset, config)
    assert texts[_iid(dataset, 3)] == "Movie 3 of SciFi."
    assert texts[_iid(dataset, 4)] == "Genre: Western."
    assert texts[_iid(dataset, 6)] == "" and texts[_iid(dataset, 9)] == ""
    assert "2 of 40 items of 'tiny' have no text at all" in caplog.text
    titles = item_titles(dataset, config)
    assert titles[_iid(dataset, 4)] == "4"  # no title: named by its id
    values, matrix = item_attribute_matrix(dataset, "genre")
    assert not matrix[_iid(dataset, 3)].any() and not matrix[_iid(dataset, 6)].any()


def test_missing_text_fields_are_a_clear_error(tiny_dataset, in_tmp):
    data_path, name, yaml_file = tiny_dataset
    config, dataset = _dataset(data_path, name, yaml_file, item_text_fields=["blurb", "maker"])
    with pytest.raises(ConfigError, match=r"\['blurb', 'maker'\] are missing.*Set item_text_fields"):
        item_texts(dataset, config)
    with pytest.raises(ConfigError, match="set item_text_fields"):
        item_texts(dataset, {"item_text_fields": None, "item_text_template": None})
    with pytest.raises(ConfigError, match="'blurb' is not among the item features"):
        item_attribute_matrix(dataset, "blurb")
    with pytest.raises(ConfigError, match="item_title_field 'blurb'"):
        item_titles(dataset, {"item_title_field": "blurb"})


def test_a_dataset_without_an_item_file_is_a_clear_error(tmp_path, in_tmp):
    folder = write_tiny_dataset(tmp_path / "data")
    (folder / "tiny.item").unlink()
    config, dataset = _dataset(
        str(folder.parent),
        "tiny",
        str(folder / "tiny.yaml"),
        load_col={"inter": ["user_id", "item_id", "timestamp"]},
    )
    assert dataset.item_feat is None
    with pytest.raises(ConfigError, match=r"no item features.*tiny\.item.*item_text_fields"):
        item_texts(dataset, config)
    with pytest.raises(ConfigError, match="no item features"):
        item_attribute_matrix(dataset, "genre")


# ---------------------------------------------------------------------- ml-100k
@pytest.fixture(scope="module")
def ml100k(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("ml100k"))
        config = Config("SASRec", "ml-100k")
        dataset = create_dataset(config)
    return config, dataset


def test_ml100k_item_text(ml100k):
    config, dataset = ml100k
    texts = item_texts(dataset, config)
    assert len(texts) == dataset.item_num == 1683 and texts[0] == ""
    assert texts[_iid(dataset, 1)] == "Toy Story (1995). Genres: Animation, Children's, Comedy."
    assert texts[_iid(dataset, 2)] == "GoldenEye (1995). Genres: Action, Adventure, Thriller."
    assert texts[_iid(dataset, 1682)] == "Scream of Stone (Schrei aus Stein) (1991). Genres: Drama."
    assert all(texts[1:])
    titles = item_titles(dataset, config)
    assert titles[_iid(dataset, 1)] == "Toy Story" and titles[_iid(dataset, 4)] == "Get Shorty"


def test_ml100k_genre_matrix(ml100k):
    _, dataset = ml100k
    values, matrix = item_attribute_matrix(dataset, "class")
    assert len(values) == 19 and "Western" in values and "[PAD]" not in values
    assert matrix.shape == (1683, 19) and not matrix[0].any()
    toy_story = {values[j] for j in matrix[_iid(dataset, 1)].nonzero().flatten().tolist()}
    assert toy_story == {"Animation", "Children's", "Comedy"}
    assert matrix[1:].any(1).all()  # every movie has a genre
