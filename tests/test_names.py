import pytest

from tsloom.errors import InvalidNameError
from tsloom.lake.storage import dataset_uri
from tsloom.names import suggest_dataset_name, validate_dataset_name


@pytest.mark.parametrize("name", ["power.etth1", "airq.gwangju", "a.b", "db_1.table_2"])
def test_valid_names(name: str) -> None:
    assert validate_dataset_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "../etc.passwd",
        "power/../../x.y",
        "power.etth1/..",
        "power",
        "a.b.c",
        ".x",
        "Power.ETT",
        "power.",
        "1db.t",
        "db.t t",
        "",
        "db.ta\x00",
    ],
)
def test_unsafe_or_malformed_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidNameError, match="invalid dataset name"):
        validate_dataset_name(name)


def test_suggestion_is_itself_valid() -> None:
    for bad in ["Power.ETTh1", "my data", "../../x", "9.9"]:
        assert validate_dataset_name(suggest_dataset_name(bad))


def test_dataset_path_stays_under_lake(tsloom_home) -> None:
    uri = dataset_uri(tsloom_home, "power.etth1")
    assert uri.startswith(tsloom_home.lake_url)
    assert uri.endswith("/power/etth1")
    with pytest.raises(InvalidNameError):
        dataset_uri(tsloom_home, "../../outside.x")
