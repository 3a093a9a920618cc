# virustest: 0 = not tested, 1 = clean, 5 = infected.
require ["virustest", "relational", "comparator-i;ascii-numeric", "fileinto", "variables"];

if virustest :value "ge" :comparator "i;ascii-numeric" "4" {
    discard;
    stop;
}
if virustest :value "eq" :comparator "i;ascii-numeric" "1" { fileinto "virus-clean"; }
if virustest :is "0" { fileinto "virus-not-tested"; }
if virustest :matches "*" { fileinto "virustest-${1}"; }
