# environment: only checks whose answer does not depend on the implementation's identity.
require ["environment", "fileinto", "relational", "comparator-i;ascii-numeric"];

if environment :matches "name" "?*" { fileinto "has-name"; }
if environment :matches "version" "?*" { fileinto "has-version"; }
if environment :matches "host" "?*" { fileinto "has-host"; }
if environment :is "x-no-such-item" "" { fileinto "unknown-item-is-empty"; }
if environment :matches "x-no-such-item" "*" { fileinto "unknown-item-matches-star"; }
if environment :count "eq" :comparator "i;ascii-numeric" "x-no-such-item" "0" { fileinto "unknown-item-count-0"; }
if environment :is "location" ["MDA", "MS", "MTA"] { fileinto "known-location"; }
if environment :is "phase" ["during", "post"] { fileinto "known-phase"; }
