"""The PostgreSQL store's parts: migrations (``_migrate``), the SQL and row codecs (``_sql``),
and the scheduler lease (``_lease``). ``nsai_work.stores.postgres.PostgresStore`` puts them
together; nothing here is public."""
