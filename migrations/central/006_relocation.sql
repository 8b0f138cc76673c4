-- A clinic being moved to another region is `relocating`: still served for reads,
-- writes refused (503 with retry-after) until its placement is switched.
ALTER TABLE companies DROP CONSTRAINT companies_status_check;
ALTER TABLE companies ADD CONSTRAINT companies_status_check
    CHECK (status IN ('provisioning', 'active', 'suspended', 'relocating'));
