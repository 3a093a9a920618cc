# date on the Date header with and without zones; currentdate checks that do not depend on today.
require ["date", "relational", "fileinto", "variables", "comparator-i;ascii-numeric"];

if date :is "date" "year" "2024" { fileinto "year-2024-local"; }
if date :originalzone :is "date" "year" "2023" { fileinto "year-2023-original"; }
if date :zone "+0900" :is "date" "date" "2024-01-01" { fileinto "tokyo-new-year"; }
if date :zone "-0500" :value "ge" "date" "hour" "18" { fileinto "evening-in-new-york"; }
if date :originalzone :matches "date" "zone" "*" { fileinto "zone-${1}"; }
if date :zone "+0000" :matches "date" "iso8601" "*" { fileinto "iso-${1}"; }
if date :zone "+0000" :is "date" "weekday" "0" { fileinto "sunday-utc"; }
if date :matches "date" "time" "*" { fileinto "time-${1}"; }
if date :value "lt" :comparator "i;ascii-numeric" "date" "month" "3" { fileinto "jan-feb"; }
if date :is "x-original-date" "julian" "60310" { fileinto "julian-60310"; }
if date :is "received" "year" "2024" { fileinto "received-2024"; }
if not exists "date" { fileinto "no-date"; }
if date :zone "+0100" :matches "date" "std11" "*" { fileinto "std11-${1}"; }
if currentdate :value "ge" :comparator "i;ascii-numeric" "year" "2024" { fileinto "now-after-2024"; }
if currentdate :zone "+0000" :matches "date" "????-??-??" { fileinto "now-has-date"; }
