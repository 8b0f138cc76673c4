-- Computed amounts stay within the documented money range (0 to 1 000 000 000.00):
-- a line or a document whose computed total would exceed it is refused (400), as an
-- entered amount beyond it is. NOT VALID: rows written before are not re-checked.
ALTER TABLE document_lines ADD CONSTRAINT document_lines_amounts_in_range
    CHECK (net_cents BETWEEN 0 AND 100000000000
           AND vat_cents BETWEEN 0 AND 100000000000
           AND gross_cents BETWEEN 0 AND 100000000000) NOT VALID;
ALTER TABLE documents ADD CONSTRAINT documents_totals_in_range
    CHECK (net_cents BETWEEN 0 AND 100000000000
           AND vat_cents BETWEEN 0 AND 100000000000
           AND gross_cents BETWEEN 0 AND 100000000000) NOT VALID;
