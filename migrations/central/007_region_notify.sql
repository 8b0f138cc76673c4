-- A region's worker address changing (e.g. a worker switched to https) concerns
-- every clinic placed there: announce it with the payload `*`, on which gateways
-- drop their whole placement cache.
CREATE FUNCTION notify_region_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.worker_url IS DISTINCT FROM OLD.worker_url THEN
        PERFORM pg_notify('medicalpro_placement', '*');
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER regions_placement_notify
    AFTER UPDATE ON regions
    FOR EACH ROW EXECUTE FUNCTION notify_region_change();
