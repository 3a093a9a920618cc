# extracttext inside foreverypart, with :first and modifiers.
require ["foreverypart", "mime", "variables", "extracttext", "fileinto"];

foreverypart {
    if header :mime :contenttype "content-type" "text/plain" {
        extracttext :first 12 "start";
        extracttext :length "len";
        extracttext "all";
        if string :matches "${start}" "Hello*" { fileinto "starts-hello"; }
        if string :is "${start}" "Hello Bob,${unicode:0a}pl" { fileinto "never-without-encoded-character"; }
        if string :contains "${all}" "attached" { fileinto "mentions-attachment"; }
        if string :is "${len}" "0" { fileinto "empty-part"; }
        set :length "alllen" "${all}";
        fileinto "text-length-${alllen}";
        break;
    }
}
foreverypart {
    if header :mime :subtype "content-type" "csv" {
        extracttext :upper :first 4 "csv";
        fileinto "csv-${csv}";
    }
}
foreverypart {
    if header :mime :subtype "content-type" "html" {
        extracttext :first 40 "html";
        if string :contains "${html}" "<" { fileinto "html-keeps-tags"; }
    }
}
