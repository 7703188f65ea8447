-- Revenue per region and day, and the best customers: a join, two aggregates and a top-N.
--   python examples/make_sales.py /tmp/sales
--   smallpond run examples/jobs/revenue_by_region.sql -p data=/tmp/sales -p out=/tmp/daily
--   smallpond explain examples/jobs/revenue_by_region.sql -p data=/tmp/sales -p out=/tmp/daily

SET smallpond.partitions = 4;

CREATE VIEW sales AS SELECT * FROM read_parquet(${data} || '/sales/*.parquet');
CREATE VIEW customers AS SELECT * FROM read_parquet(${data} || '/customers.parquet');

-- one row per region and day, written as Parquet (part-NNNNN.parquet, then _SUCCESS)
COPY (
    SELECT c.region, s.day, count(*) AS orders, sum(s.amount) AS revenue
    FROM sales s JOIN customers c ON s.customer_id = c.customer_id
    GROUP BY c.region, s.day
) TO ${out} (FORMAT parquet, OVERWRITE);

-- the job's result: printed, or written with --output
SELECT c.name, c.region, count(*) AS orders, round(sum(s.amount), 2) AS spent
FROM sales s JOIN customers c ON s.customer_id = c.customer_id
GROUP BY c.name, c.region
ORDER BY spent DESC
LIMIT 10;
