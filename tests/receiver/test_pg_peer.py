"""The PostgreSQL peer survives its free port being taken before it binds (a busy machine).

free_port() finds a port that was free a moment ago; the clean-clone CI beside a 1,000-branch
fleet once lost it to another process ("could not bind ... Address already in use").
"""

from __future__ import annotations

import socket

import psycopg

from tests.peers.postgres import Postgres


def test_a_taken_port_on_first_start_moves_to_another() -> None:
    with socket.socket() as taken:  # bound, not listening: as a client's ephemeral port holds it
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        pg = Postgres(port=port)
        try:
            pg.start()
            assert pg.port != port
            with psycopg.connect(pg.url()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            pg.destroy()
