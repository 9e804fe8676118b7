-- Each usage record keeps the cost estimate made when it was written and the
-- version of the price table used, so a later price change never rewrites
-- history. NULL when the model had no price.
ALTER TABLE usage_records ADD COLUMN cost_micros INTEGER;
ALTER TABLE usage_records ADD COLUMN price_version TEXT;
