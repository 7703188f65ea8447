-- Active customers who bought again after their largest order: a window function (rows
-- shuffled by customer), a DISTINCT aggregate, a correlated EXISTS (a semi join) and a top-N.
--   python examples/make_sales.py /tmp/sales
--   smallpond run examples/jobs/repeat_buyers.sql -p data=/tmp/sales -p min_days=40

CREATE VIEW sales AS SELECT * FROM read_parquet(${data} || '/sales/*.parquet');

CREATE VIEW largest AS
SELECT customer_id, day, amount
FROM sales
QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY amount DESC, order_id) = 1;

CREATE VIEW activity AS
SELECT customer_id, count(DISTINCT day) AS active_days FROM sales GROUP BY customer_id;

SELECT l.customer_id, a.active_days, l.day AS biggest_day, l.amount AS biggest_amount
FROM largest l JOIN activity a ON a.customer_id = l.customer_id
WHERE a.active_days >= ${min_days}
  AND EXISTS (SELECT * FROM sales s WHERE s.customer_id = l.customer_id AND s.day > l.day)
ORDER BY l.amount DESC, l.customer_id
LIMIT 20;
