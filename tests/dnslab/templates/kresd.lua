-- Knot Resolver 5 validating resolver of the lab (generated; see dnslab/servers.py).
-- Drop modules loaded by default that send queries of their own towards the root.
for _, m in ipairs({'ta_signal_query', 'priming', 'detect_time_skew', 'detect_time_jump', 'ta_update'}) do
    pcall(modules.unload, m)
end
net.ipv6 = false
net.listen('$address', 53, { kind = 'dns' })
-- the lab authoritative servers live on 127/8
option('ALLOW_LOCAL', true)
-- replace the Debian root key with the lab anchor
trust_anchors.remove('.')
trust_anchors.add('$anchor')
modules.load('hints > iterate')
hints.root({['$root_ns'] = '$root_addr'})
cache.open(20 * MB, 'lmdb://$rundir/cache')
-- kresd keeps records at least 5 s by default; honour the lab's 2 s record TTLs like the others do
cache.min_ttl(0)
