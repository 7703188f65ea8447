"""Global SQL over partitioned data: session.sql, SQL job files, and their planner."""
