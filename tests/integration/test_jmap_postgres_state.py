"""The JMAP watermark with [storage] url: PgState keeps it in PostgreSQL (schema step
fd_fetch_jmap_sync), as State keeps it in sqlite; a real PostgreSQL 15."""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed (pip install '.[postgres]')")

from fetchdeliver.state import POP3_FOLDER, Pending  # noqa: E402
from fetchdeliver.storage import pgschema  # noqa: E402
from fetchdeliver.storage.pgstate import PgState  # noqa: E402
from postgres_support import pg_url, postgres_server  # noqa: E402,F401

pytestmark = pytest.mark.timeout(120)


def test_jmap_watermark_and_email_ids_in_postgres(tmp_path, pg_url):  # noqa: F811
    with psycopg.connect(pg_url, autocommit=True) as conn:
        pgschema.migrate(conn)
    st = PgState(pg_url, str(tmp_path))
    try:
        assert st.jmap_sync_point("acct") is None
        st.set_jmap_sync_point("acct", ("u1", "mb1", "s1"))
        st.set_jmap_sync_point("acct", ("u1", "mb1,mb2", "s2"))
        assert st.jmap_sync_point("acct")[:3] == ("u1", "mb1,mb2", "s2")
        p = Pending("fdtok1", POP3_FOLDER, None, "M1", ("<x@y>", 10, "d" * 64), 1.0)
        st.add_pending("acct", [p])
        st.complete("acct", delivered=[p])
        assert st.pop3_seen("acct") == {"M1"}
        st.set_jmap_sync_point("acct", None)
        assert st.jmap_sync_point("acct") is None
    finally:
        st.close()
