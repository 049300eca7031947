"""No path with a colon in the repository, and a `gs://` URL is never taken for a local path."""
from lrr_jax import files
from tests import conftest


def test_repository_holds_no_path_with_a_colon():
  # `conftest.pytest_sessionfinish` also fails the session if a test writes one.
  assert not conftest.colon_paths(), "a gs:// URL was written as a local path (pathlib makes gs://b/x gs:/b/x)"


def test_a_gs_url_stays_a_url(tmp_path):
  assert str(files.as_path("gs://bucket/data/x.json")) == "gs://bucket/data/x.json"
  assert files.is_remote("gs://bucket/data") and not files.is_remote(tmp_path / "data")
