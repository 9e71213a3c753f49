"""The dropModel / dropDataset mutations: behind the token, and what they remove."""

from __future__ import annotations

from tests.api.test_api import TOKEN, client, data, error, populated  # noqa: F401 - fixtures

DROP_B = 'mutation { dropModel(key: "b") { kind name tablesDropped rowsDeleted saesRemoved indexFilesRemoved } }'
DROP_OTHER = 'mutation { dropDataset(name: "other") { kind name tablesDropped rowsDeleted } }'


def test_drops_need_the_token(client, populated):
    assert "needs the header 'Authorization: Bearer TOKEN'" in error(client, DROP_B)
    assert "needs the header" in error(client, DROP_OTHER, token="wrong")
    assert [m.key for m in populated.models.list()] == ["a", "b"]
    assert [d.name for d in populated.prompts.datasets()] == ["ds", "other"]


def test_drop_model_and_dataset(client, populated):
    populated.knn.search("b", 0, [[1.0] * 24], 3)  # a persisted index of b
    assert data(client, DROP_B, token=TOKEN)["dropModel"] == {
        "kind": "model",
        "name": "b",
        "tablesDropped": 6,
        "rowsDeleted": 0,
        "saesRemoved": 0,
        "indexFilesRemoved": 3,
    }
    assert data(client, "{ models { key } }")["models"] == [{"key": "a"}]
    assert error(client, DROP_B, token=TOKEN) == "unknown model 'b'; known models: a"

    # 10 prompts of 'other', and their rows at a's 4 layers
    assert data(client, DROP_OTHER, token=TOKEN)["dropDataset"] == {
        "kind": "dataset",
        "name": "other",
        "tablesDropped": 0,
        "rowsDeleted": 50,
    }
    assert [d.name for d in populated.prompts.datasets()] == ["ds"]
    assert len(populated.read_activations("a", 3)[0]) == 48
    assert error(client, DROP_OTHER, token=TOKEN).startswith("unknown dataset 'other'")
