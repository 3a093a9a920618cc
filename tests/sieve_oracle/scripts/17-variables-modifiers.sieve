# All set modifiers, combined (applied by precedence, not written order).
require ["variables", "fileinto"];

set "s" "Hello World";
set :lower "l" "${s}";
set :upper "u" "${s}";
set :lowerfirst "lf" "${s}";
set :upperfirst "uf" "hello world";
set :length "n" "${s}";
set :quotewildcard "q" "a*b?c\\d";
set :upper :lowerfirst "ulf" "hello";
set :lower :upperfirst "luf" "HELLO";
set :length :upper "len" "abc";
set :quotewildcard :upper "qu" "x*y";
if string :is "${l}" "hello world" { fileinto "lower"; }
if string :is :comparator "i;octet" "${u}" "HELLO WORLD" { fileinto "upper"; }
if string :is :comparator "i;octet" "${lf}" "hello World" { fileinto "lowerfirst"; }
if string :is :comparator "i;octet" "${uf}" "Hello world" { fileinto "upperfirst"; }
if string :is "${n}" "11" { fileinto "length-11"; }
if string :is :comparator "i;octet" "${q}" "a\\*b\\?c\\\\d" { fileinto "quotewildcard"; }
if string :matches "a*b?c\\d" "${q}" { fileinto "quoted-matches-literal"; }
if string :is :comparator "i;octet" "${ulf}" "hELLO" { fileinto "upper-lowerfirst"; }
if string :is :comparator "i;octet" "${luf}" "Hello" { fileinto "lower-upperfirst"; }
if string :is "${len}" "3" { fileinto "length-upper"; }
if header :matches "subject" "*" {
    set :lower :length "sl" "${1}";
    fileinto "subject-length-${sl}";
    set :upper "su" "${1}";
    if string :contains :comparator "i;octet" "${su}" "FRIDAY" { fileinto "subject-upper-friday"; }
}
