# :regex is a POSIX ERE, as the C library's regcomp/regexec read it (Pigeonhole hands it on):
# leftmost-longest, bracket expressions, GNU escapes, and what REG_ICASE does to them.
require ["regex", "variables", "fileinto"];

if string :regex "abcd" "(a|ab)(c|bcd)(d*)" { fileinto "alt-${0}-${1}-${2}-${3}"; }
if string :regex "xabx" "a|ab" { fileinto "longest-${0}"; }
if string :regex "a]b" "[]]" { fileinto "bracket-close"; }
if string :regex "a-b" "a[]-]b" { fileinto "bracket-dash"; }
if string :regex "a\\b" "a[\\]b" { fileinto "bracket-backslash"; }
if string :regex "d" "^\\d$" { fileinto "octet-escaped-d"; }
if string :regex :comparator "i;ascii-casemap" "d" "^\\d$" { fileinto "casemap-escaped-d"; }
if string :regex :comparator "i;ascii-casemap" "x" "^\\X$" { fileinto "casemap-escaped-X"; }
if string :regex "a)" "^(a))$" { fileinto "unmatched-paren"; }
if string :regex "aa" "^a{,3}$" { fileinto "interval-no-min"; }
if string :regex "ab1_" "^[[:alpha:]]+[[:digit:]]\\w$" { fileinto "classes"; }
if string :regex "word end" "d\\b" { fileinto "word-boundary"; }
if string :regex "aaa" "^a**$" { fileinto "star-star"; }
if string :regex "a.b" "^a\\.b$" { fileinto "escaped-dot"; }
if string :regex "axb" "^a\\.b$" { fileinto "escaped-dot-wrong"; }
if string :regex :comparator "i;ascii-casemap" "HeLLo" "^hello$" { fileinto "casemap"; }
if string :regex "HeLLo" "^hello$" { fileinto "octet-case"; }
if string :regex "anK" "(^|\\n)K" { fileinto "backslash-n-is-n"; }
if string :regex "tab" "^\\tab$" { fileinto "backslash-t-is-t"; }
if string :regex "x" "^[[=x=]]$" { fileinto "equivalence-class"; }
if string :regex "" "^$" { fileinto "empty"; }
if string :regex "a+b" "^a[+]b$" { fileinto "plus-in-brackets"; }
if string :regex "foo.bar" "^([^.]+)\\.(.*)$" { fileinto "split-${1}-${2}"; }
