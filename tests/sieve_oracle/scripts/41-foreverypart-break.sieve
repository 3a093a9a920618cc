# foreverypart loops, break, named nested loops, and :mime tests on the current part.
# (Pigeonhole 0.5.19 fails at run time - "corrupt binary deleted" - when a command follows a
# named inner loop that contains `break :name "outer"`, or when such an inner loop sits inside
# an `if` of the outer loop and runs to its end; those forms are avoided here.)
require ["foreverypart", "mime", "variables", "fileinto"];

set "seen" "";
foreverypart {
    set "seen" "${seen}p";
    if header :mime :subtype "content-type" "pdf" {
        fileinto "found-pdf-after-${seen}";
        break;
    }
}
set "pairs" "";
foreverypart :name "outer" {
    foreverypart :name "inner" {
        set "pairs" "${pairs}i";
        if header :mime :subtype "content-type" "html" {
            fileinto "html-after-${pairs}";
            break :name "outer";
        }
    }
}
fileinto "pairs-${pairs}";
set "types" "";
foreverypart {
    if header :mime :contenttype :matches "content-type" "*" {
        set "types" "${types}[${1}]";
    }
}
fileinto "types-${types}";
foreverypart {
    if header :mime :param "filename" :matches "content-disposition" "*.*" {
        fileinto "attachment-${2}";
    }
}
