-- PowerDNS Recursor: replace the built-in root anchor with the lab one.
clearTA()
addTA('.', '$ds')
