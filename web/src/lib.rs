//! Browser front end for Unpersonal. Built in issue 7.
