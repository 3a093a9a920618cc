# ${hex:} and ${unicode:} in strings; invalid encodings stay literal.
require ["encoded-character", "fileinto"];

if header :contains "subject" "${hex:47 72 C3 BC}" { fileinto "hex-grue"; }
if header :contains "subject" "${unicode:2713}" { fileinto "unicode-check"; }
if header :contains "subject" "${UNICODE:00e9}" { fileinto "unicode-upper-e-acute"; }
if header :is "subject" "${hex:4c 75 6e 63 68} on Friday?" { fileinto "hex-lunch"; }
if true { fileinto "${hex:49}${hex:4e}box-${unicode:00FC}"; }
fileinto "literal-${hex:zz}-${unicode:}-${foo:41}";
fileinto "empty-${hex:}";
