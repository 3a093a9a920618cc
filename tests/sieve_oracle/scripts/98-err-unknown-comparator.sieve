# A comparator that does not exist: compile error.
if header :is :comparator "i;no-such-comparator" "subject" "x" {
    discard;
}
